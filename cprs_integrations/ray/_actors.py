"""What every actor that holds an engine gets, for the Ray Data stage and the Serve replicas alike: its device,
its torch threads and its process environment."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: oneDNN caches a compiled kernel, with its packed weights, per batch shape; an actor that lives long sees many
#: shapes, so on a CPU its memory grows call after call with the default cache (``cprs serve`` sets the same, with
#: the measurement). Set for the actors unless the caller's runtime environment sets it.
ONEDNN_CACHE_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "4"}


def engine_kwargs_for(engine_kwargs: Mapping[str, Any] | None, num_gpus: float, **defaults: Any) -> dict[str, Any]:
    """``engine_kwargs`` with ``device`` defaulting to the actor's resources (``"cuda"``: the GPU Ray gives it, as
    Ray sets ``CUDA_VISIBLE_DEVICES``; ``"cpu"`` without one) and the other ``defaults`` where not given."""
    kwargs = dict(engine_kwargs or {})
    kwargs.setdefault("device", "cuda" if num_gpus > 0 else "cpu")
    for name, value in defaults.items():
        if value is not None:
            kwargs.setdefault(name, value)
    return kwargs


def torch_threads_for(torch_threads: int | None, num_cpus: float | None) -> int:
    """torch threads of an actor: ``torch_threads``, else its CPUs rounded up (at least 1), so that actors sharing
    a machine do not oversubscribe its cores.

    Raises:
        ValueError: not a positive integer.
    """
    threads = torch_threads if torch_threads is not None else max(1, math.ceil(num_cpus or 1))
    return positive_int("torch_threads", threads)


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is a Python ``int`` of at least 1, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def runtime_env_for(runtime_env: Mapping[str, Any] | None) -> dict[str, Any]:
    """The actors' runtime environment: the caller's, plus :data:`ONEDNN_CACHE_ENV` where it does not set it."""
    env = dict(runtime_env or {})
    env["env_vars"] = {**ONEDNN_CACHE_ENV, **dict(env.get("env_vars") or {})}
    return env
