"""One loaded engine per (model, settings) per process, shared by every adapter."""

from __future__ import annotations

import inspect
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


def engine_key(cls: type[CPRSEngine], model: str | os.PathLike[str] | None, options: dict[str, Any]) -> tuple[Any, ...]:
    """A hashable key: the resolved model location plus every loading option, defaults filled in and the device and
    dtype resolved as loading would resolve them.

    ``shared()``, ``shared(dtype="auto")`` and, on a machine without a GPU, ``shared(device="cpu")`` therefore name the
    same engine. Unknown options are a ``TypeError``; an unavailable device is a ``ValueError``.
    """
    bound = inspect.signature(cls.from_pretrained).bind(model, **options)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    where = arguments.pop("model")
    if where is None:
        from cprs_integrations.models.loading import default_critic_path

        where = default_critic_path()
    where = str(Path(where).expanduser().resolve()) if Path(where).expanduser().exists() else str(where)
    if arguments.get("device_map") is None and arguments.get("devices") is None:
        from cprs_integrations.models.devices import resolve_device, resolve_dtype

        arguments["device"] = resolve_device(arguments.get("device"))
        arguments["dtype"] = str(resolve_dtype(arguments.get("dtype", "auto"), arguments["device"]))
    return (where, _freeze(arguments))


def shared_engine(cls: type[CPRSEngine], model: str | os.PathLike[str] | None, options: dict[str, Any]) -> CPRSEngine:
    """Return the engine for this key, loading it once even when many threads ask at the same time."""
    key = engine_key(cls, model, options)
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


def register_shared_engine(
    engine: CPRSEngine, model: str | os.PathLike[str] | None = None, options: dict[str, Any] | None = None
) -> None:
    """Make ``engine`` the shared engine for these arguments (e.g. a custom critic as every adapter's default)."""
    key = engine_key(type(engine), model, options or {})
    with _registry_lock:
        _engines[key] = engine


def clear_shared_engines() -> None:
    """Forget every shared engine (their memory is freed once nothing else holds them)."""
    with _registry_lock:
        _engines.clear()
        _key_locks.clear()
