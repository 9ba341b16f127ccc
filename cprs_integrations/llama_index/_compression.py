"""How the LlamaIndex adapters reach the engine: which engine (lazy, shared) and which compression options."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cprs_integrations.engine.prompts import check_granularity

if TYPE_CHECKING:
    from cprs_integrations.engine.engine import CPRSEngine

MODES = ("budget", "tags")
#: Share of tokens kept in budget mode when neither ``target_ratio`` nor ``target_tokens`` is given (5x smaller).
DEFAULT_TARGET_RATIO = 0.2


def check_engine(engine: Any, model: Any = None, engine_kwargs: Mapping[str, Any] | None = None) -> CPRSEngine | None:
    """Accept ``None`` or something that compresses like a :class:`CPRSEngine` (checked without importing it).

    Raises:
        TypeError: ``engine`` is not an engine.
        ValueError: ``engine`` comes with ``model`` or ``engine_kwargs`` (which would be ignored).
    """
    if engine is None:
        return None
    if not (callable(getattr(engine, "compress", None)) and hasattr(engine, "acompress")):
        raise TypeError(
            "engine must be a CPRSEngine (CPRSEngine.from_pretrained(...) or CPRSEngine.shared(...)) or None, "
            f"got {type(engine).__name__}"
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


def load_engine(engine: CPRSEngine | None, model: str | None, engine_kwargs: Mapping[str, Any]) -> CPRSEngine:
    """The given engine, else the process-wide shared one for ``model`` (loaded on first use, torch with it)."""
    if engine is not None:
        return engine
    from cprs_integrations.engine.engine import CPRSEngine

    return CPRSEngine.shared(model, **dict(engine_kwargs))


def check_options(granularity: Any, mode: Any, target_ratio: Any, target_tokens: Any) -> None:
    """Raise ``ValueError`` for an unknown granularity or mode, or a budget that does not fit the mode."""
    check_granularity(granularity)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(map(repr, MODES))}")
    if mode == "tags":
        if target_ratio is not None or target_tokens is not None:
            raise ValueError(
                f"mode='tags' keeps what the critic tags and has no budget, got target_ratio={target_ratio!r} and "
                f"target_tokens={target_tokens!r}; drop them or use mode='budget'"
            )
        return
    if target_ratio is not None and target_tokens is not None:
        raise ValueError(f"give target_ratio or target_tokens, not both (got {target_ratio!r} and {target_tokens!r})")
    if target_ratio is not None and (
        isinstance(target_ratio, bool)
        or not isinstance(target_ratio, (int, float))
        or math.isnan(target_ratio)
        or not 0.0 < target_ratio <= 1.0
    ):
        raise ValueError(f"target_ratio must be a number in (0, 1] (0.2 keeps 20%), got {target_ratio!r}")
    if target_tokens is not None and (
        isinstance(target_tokens, bool) or not isinstance(target_tokens, int) or target_tokens < 1
    ):
        raise ValueError(f"target_tokens must be a positive integer, got {target_tokens!r}")


def budget_options(mode: str, target_ratio: float | None, target_tokens: int | None) -> dict[str, Any]:
    """The budget keyword of ``CPRSEngine.compress``: none in tags mode, ``DEFAULT_TARGET_RATIO`` if none given."""
    if mode == "tags":
        return {}
    if target_tokens is not None:
        return {"target_tokens": target_tokens}
    return {"target_ratio": DEFAULT_TARGET_RATIO if target_ratio is None else target_ratio}


def engine_name(model: str | None, engine: CPRSEngine | None) -> str:
    """A readable name of the critic for instrumentation events."""
    if engine is not None:
        critic = getattr(engine, "critic", None)
        name = getattr(critic, "name_or_path", None)
        if name is not None:
            return str(name)
    return model if model is not None else "cprs-default"
