"""``cprs serve``: one process holding one critic, batched across every client, over HTTP (FastAPI + uvicorn).

Needs the ``serve`` extra (``pip install 'cprs-integrations[serve]'``). Start it with ``cprs serve`` (see
``cprs serve -h``) or build the app yourself with :func:`create_app`; clients use
:class:`~cprs_integrations.api.client.RemoteCPRSEngine`.

One job per module: ``app`` (the factory), ``routes`` (``/v1``), ``compat`` (the official route), ``ops`` (health,
metrics, docs), ``auth``, ``limits``, ``metrics``, ``access`` (request id, access log), ``errors``, ``holder`` (the
engine, loaded in the background), ``settings``, ``run`` (uvicorn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServerSettings", "create_app", "serve"]

_LAZY = {
    "create_app": "cprs_integrations.server.app",
    "ServerSettings": "cprs_integrations.server.settings",
    "serve": "cprs_integrations.server.run",
}

if TYPE_CHECKING:
    from cprs_integrations.server.app import create_app
    from cprs_integrations.server.run import serve
    from cprs_integrations.server.settings import ServerSettings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as e:
            if e.name in ("fastapi", "uvicorn", "prometheus_client", "starlette"):
                raise ImportError(f"the CPRS server needs {e.name}: pip install 'cprs-integrations[serve]'") from e
            raise
        return getattr(module, name)
    raise AttributeError(f"module 'cprs_integrations.server' has no attribute {name!r}")
