"""One loaded engine per (model, settings) per process, shared by every adapter."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cprs_integrations.engine.engine import CPRSEngine

_engines: dict[tuple[Any, ...], CPRSEngine] = {}
_key_locks: dict[tuple[Any, ...], threading.Lock] = {}
_registry_lock = threading.Lock()


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def engine_key(model: str | os.PathLike[str] | None, options: dict[str, Any]) -> tuple[Any, ...]:
    """A hashable key: the resolved model location plus the loading options."""
    where = None if model is None else str(Path(model).resolve()) if Path(model).exists() else str(model)
    return (where, _freeze(options))


def shared_engine(cls: type[CPRSEngine], model: str | os.PathLike[str] | None, options: dict[str, Any]) -> CPRSEngine:
    """Return the engine for this key, loading it once even when many threads ask at the same time."""
    key = engine_key(model, options)
    with _registry_lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = cls.from_pretrained(model, **options)
            with _registry_lock:
                _engines[key] = engine
        return engine


def clear_shared_engines() -> None:
    """Forget every shared engine (their memory is freed once nothing else holds them)."""
    with _registry_lock:
        _engines.clear()
        _key_locks.clear()
