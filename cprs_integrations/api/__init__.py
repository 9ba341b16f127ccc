"""The HTTP API of ``cprs serve``: its JSON shapes (:mod:`~cprs_integrations.api.schemas`) and the client
:class:`~cprs_integrations.api.client.RemoteCPRSEngine` (also importable from ``cprs_integrations``).

No FastAPI here: a client process needs only httpx and pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["RemoteCPRSEngine", "RemoteEngineError", "RemoteRequestError"]

if TYPE_CHECKING:
    from cprs_integrations.api.client import RemoteCPRSEngine, RemoteEngineError, RemoteRequestError


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cprs_integrations.api import client

        return getattr(client, name)
    raise AttributeError(f"module 'cprs_integrations.api' has no attribute {name!r}")
