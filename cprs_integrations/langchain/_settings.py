"""Settings shared by the LangChain adapters: which engine to use, and how to compress.

The engine is never loaded here at construction: :meth:`EngineSettings.get_engine` loads it on first use through
:meth:`CPRSEngine.shared`, so every adapter in a process shares one critic. No torch import happens in this module.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from cprs_integrations.engine.inputs import check_query
from cprs_integrations.engine.options import DOCUMENT_ADAPTER_FIELDS, CompressionOptions, option_fields_model
from cprs_integrations.protocol import Compressor

__all__ = ["CompressionSettings", "EngineSettings", "check_query"]


class EngineSettings(BaseModel):
    """Which engine an adapter uses: a given :class:`~cprs_integrations.protocol.Compressor` (a
    :class:`~cprs_integrations.engine.engine.CPRSEngine` or a :class:`~cprs_integrations.api.client.RemoteCPRSEngine`),
    else a :class:`~cprs_integrations.engine.engine.CPRSEngine` loaded lazily and shared."""

    model: str | None = Field(
        default=None,
        description="Local folder or hub id of a CPRS critic; None loads the embedded default critic (CPU).",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of CPRSEngine.from_pretrained (device, dtype, window_tokens, batch_size, ...).",
    )
    engine: SkipJsonSchema[Compressor | None] = Field(
        default=None,
        exclude=True,
        description="An already built engine: a CPRSEngine, or a RemoteCPRSEngine (a cprs serve server), or any "
        "Compressor; when set, model and engine_kwargs must be left unset.",
    )

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    @field_validator("model", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("engine", mode="before")
    @classmethod
    def _check_engine(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, Compressor):
            raise ValueError(
                "engine must be a CPRSEngine or a RemoteCPRSEngine (a Compressor: compress and acompress), or None "
                f"to load one lazily; got {type(value).__name__}"
            )
        return value

    @model_validator(mode="after")
    def _engine_or_model(self) -> EngineSettings:
        if self.engine is not None and (self.model is not None or self.engine_kwargs):
            raise ValueError(
                "pass either engine= (an existing CPRSEngine) or model= / engine_kwargs= (to load one), not both"
            )
        return self

    def get_engine(self) -> Compressor:
        """The engine: ``engine`` if given, else the process-wide one for ``model`` and ``engine_kwargs``."""
        if self.engine is not None:
            return self.engine
        from cprs_integrations.engine.engine import CPRSEngine

        return CPRSEngine.shared(self.model, **self.engine_kwargs)

    async def aget_engine(self) -> Compressor:
        """:meth:`get_engine` without blocking the event loop (the first call loads the critic)."""
        if self.engine is not None:
            return self.engine
        return await asyncio.to_thread(self.get_engine)


_DocumentOptions = option_fields_model("_DocumentOptions", DOCUMENT_ADAPTER_FIELDS)


class CompressionSettings(EngineSettings, _DocumentOptions):
    """How documents are compressed: the options of :class:`~cprs_integrations.engine.options.CompressionOptions`
    (declared there, with their defaults and docs), ``per_document_budget`` for its ``per_text_budget``."""

    per_document_budget: bool = Field(
        default=False,
        strict=True,
        description="Apply the budget to each document separately instead of across all documents of a call.",
    )

    @model_validator(mode="after")
    def _check_options(self) -> CompressionSettings:
        self.compression_options()
        return self

    def compression_options(self) -> CompressionOptions:
        """The :class:`CompressionOptions` these settings stand for (checked across fields: the budget rule).

        Raises:
            ValueError: options that do not go together (two budgets, a budget in tags mode).
        """
        return CompressionOptions.of(self, DOCUMENT_ADAPTER_FIELDS, per_text_budget=self.per_document_budget)

    def compress_options(self) -> dict[str, Any]:
        """Deprecated (0.2, removed in 0.3): keyword arguments of ``CPRSEngine.compress``; use
        :meth:`compression_options`, which returns the options object."""
        import warnings

        warnings.warn(
            "compress_options() is deprecated; use compression_options() (a CompressionOptions)",
            DeprecationWarning,
            stacklevel=2,
        )
        options = self.compression_options()
        return {name: getattr(options, name) for name in type(options).model_fields}
