"""Settings shared by the LangChain adapters: which engine to use, and how to compress.

The engine is never loaded here at construction: :meth:`EngineSettings.get_engine` loads it on first use through
:meth:`CPRSEngine.shared`, so every adapter in a process shares one critic. No torch import happens in this module.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cprs_integrations.engine.lexical import DEFAULT_LEXICAL_WEIGHT

if TYPE_CHECKING:
    from cprs_integrations.engine.engine import CPRSEngine

#: Share of tokens kept when neither ``target_ratio`` nor ``target_tokens`` is given (5x compression).
DEFAULT_TARGET_RATIO = 0.2


class EngineSettings(BaseModel):
    """Which :class:`~cprs_integrations.engine.engine.CPRSEngine` an adapter uses (loaded lazily, shared)."""

    model: str | None = Field(
        default=None,
        description="Local folder or hub id of a CPRS critic; None loads the embedded default critic (CPU).",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of CPRSEngine.from_pretrained (device, dtype, window_tokens, batch_size, ...).",
    )
    engine: Any = Field(
        default=None,
        exclude=True,
        description="An already built CPRSEngine; when set, model and engine_kwargs must be left unset.",
    )

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    @field_validator("model", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("engine")
    @classmethod
    def _check_engine(cls, value: Any) -> Any:
        if value is not None and not (hasattr(value, "compress") and hasattr(value, "acompress")):
            raise ValueError(f"engine must be a CPRSEngine (or None to load one lazily), got {type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _engine_or_model(self) -> EngineSettings:
        if self.engine is not None and (self.model is not None or self.engine_kwargs):
            raise ValueError(
                "pass either engine= (an existing CPRSEngine) or model= / engine_kwargs= (to load one), not both"
            )
        return self

    def get_engine(self) -> CPRSEngine:
        """The engine: ``engine`` if given, else the process-wide one for ``model`` and ``engine_kwargs``."""
        if self.engine is not None:
            return self.engine
        from cprs_integrations.engine.engine import CPRSEngine

        return CPRSEngine.shared(self.model, **self.engine_kwargs)

    async def aget_engine(self) -> CPRSEngine:
        """:meth:`get_engine` without blocking the event loop (the first call loads the critic)."""
        if self.engine is not None:
            return self.engine
        return await asyncio.to_thread(self.get_engine)


class CompressionSettings(EngineSettings):
    """How documents are compressed: granularity, instruction, mode and token budget."""

    granularity: Literal["token", "sentence", "paragraph", "chunk"] = Field(
        default="sentence",
        description="Unit of selection: token (keywords), sentence, paragraph or chunk.",
    )
    instruction: str | None = Field(
        default=None,
        description="Free-text instruction for the critic; None uses the template of the granularity.",
    )
    mode: Literal["budget", "tags"] = Field(
        default="budget",
        description="budget: rank units under a token budget; tags: official argmax tags, no budget.",
    )
    target_ratio: float | None = Field(
        default=DEFAULT_TARGET_RATIO,
        gt=0.0,
        le=1.0,
        description=(
            "Budget mode: share of tokens kept, in (0, 1]. Defaults to 0.2 when target_tokens is not given; "
            "unset in tags mode."
        ),
    )
    target_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Budget mode: keep at most this many tokens (exclusive with target_ratio).",
    )
    per_document_budget: bool = Field(
        default=False,
        description="Apply the budget to each document separately instead of across all documents of a call.",
    )
    token_counter: Any = Field(
        default="o200k_base",
        description="How budget tokens are counted: tiktoken encoding name, HF tokenizer or str -> int callable.",
    )
    separator: str = Field(
        default=" ... ",
        description="Inserted between non-adjacent kept slices of a document (its tokens count against the budget).",
    )

    lexical_weight: float = Field(
        default=DEFAULT_LEXICAL_WEIGHT,
        ge=0.0,
        allow_inf_nan=False,
        description="Budget mode at sentence / paragraph / chunk granularity: weight of BM25 next to the critic "
        "when ranking units (z-score fusion); 0 ranks by the critic alone.",
    )

    @model_validator(mode="after")
    def _resolve_budget(self) -> CompressionSettings:
        ratio_given = "target_ratio" in self.model_fields_set and self.target_ratio is not None
        if self.mode == "tags":
            if ratio_given or self.target_tokens is not None:
                raise ValueError(
                    "mode='tags' has no budget: leave target_ratio and target_tokens unset, or use mode='budget'"
                )
            self.target_ratio = None
        elif self.target_tokens is not None:
            if ratio_given:
                raise ValueError(
                    f"pass one budget, not both: target_ratio={self.target_ratio!r}, "
                    f"target_tokens={self.target_tokens!r}"
                )
            self.target_ratio = None
        elif self.target_ratio is None:
            self.target_ratio = DEFAULT_TARGET_RATIO
        return self

    def compress_options(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`CPRSEngine.compress` (the query and texts aside)."""
        return {
            "granularity": self.granularity,
            "instruction": self.instruction,
            "mode": self.mode,
            "target_ratio": self.target_ratio,
            "target_tokens": self.target_tokens,
            "token_counter": self.token_counter,
            "per_text_budget": self.per_document_budget,
            "separator": self.separator,
            "lexical_weight": self.lexical_weight,
        }


def check_query(query: Any) -> str:
    """Return ``query`` if it is a non-empty string, else raise with the bad value."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"query must be a non-empty string (it guides what is kept), got {query!r}")
    return query
