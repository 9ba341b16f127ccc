"""How the LlamaIndex adapters reach the engine: which engine (lazy, shared). Options: ``engine/options.py``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cprs_integrations.protocol import Compressor


def check_engine(engine: Any, model: Any = None, engine_kwargs: Mapping[str, Any] | None = None) -> Compressor | None:
    """Accept ``None`` or a :class:`~cprs_integrations.protocol.Compressor`: a :class:`CPRSEngine` or a
    :class:`~cprs_integrations.api.client.RemoteCPRSEngine` (checked without importing either).

    Raises:
        TypeError: ``engine`` is not an engine.
        ValueError: ``engine`` comes with ``model`` or ``engine_kwargs`` (which would be ignored).
    """
    if engine is None:
        return None
    if not isinstance(engine, Compressor):
        raise TypeError(
            "engine must be a CPRSEngine (CPRSEngine.from_pretrained(...) or CPRSEngine.shared(...)), a "
            f"RemoteCPRSEngine (a cprs serve server) or None, got {type(engine).__name__}"
        )
    if model is not None or engine_kwargs:
        raise ValueError(
            f"pass either engine= (an existing CPRSEngine) or model= / engine_kwargs= (to load one), not both; "
            f"got model={model!r}, engine_kwargs={dict(engine_kwargs or {})!r}"
        )
    return engine


def model_name(model: Any) -> str | None:
    """``None``, a hub id or a local folder (``str`` or path-like) as a string."""
    if model is None or isinstance(model, str):
        return model
    if isinstance(model, os.PathLike):
        return os.fspath(model)  # type: ignore[return-value]
    raise TypeError(f"model must be a hub id or a local folder (str or path) or None, got {type(model).__name__}")


def load_engine(engine: Compressor | None, model: str | None, engine_kwargs: Mapping[str, Any]) -> Compressor:
    """The given engine, else the process-wide shared one for ``model`` (loaded on first use, torch with it)."""
    if engine is not None:
        return engine
    from cprs_integrations.engine.engine import CPRSEngine

    return CPRSEngine.shared(model, **dict(engine_kwargs))


def engine_name(model: str | None, engine: Compressor | None) -> str:
    """A readable name of the critic for instrumentation events."""
    if engine is not None:
        critic = getattr(engine, "critic", None)
        name = getattr(critic, "name_or_path", None)
        if name is not None:
            return str(name)
    return model if model is not None else "cprs-default"
