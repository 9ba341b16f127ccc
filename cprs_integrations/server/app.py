"""create_app: the FastAPI app of ``cprs serve`` around ONE engine (one process, one critic, one batching queue).

Routes: ``POST /v1/compress``, ``POST /v1/score``, ``GET /v1/models`` (:mod:`~cprs_integrations.server.routes`),
``POST /qwen_long_compress_server`` (:mod:`~cprs_integrations.server.compat`), ``GET /healthz``, ``/readyz``,
``/metrics``, ``/docs``, ``/openapi.json`` (:mod:`~cprs_integrations.server.ops`).

Middleware, outermost first: request id + access log + metrics + last-resort 500
(:mod:`~cprs_integrations.server.access`), then the body size limit (:mod:`~cprs_integrations.server.limits`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cprs_integrations import __version__
from cprs_integrations.engine.engine import CPRSEngine
from cprs_integrations.server import compat, ops, routes
from cprs_integrations.server.access import RequestContext
from cprs_integrations.server.errors import EXCEPTION_HANDLERS, on_validation_error
from cprs_integrations.server.holder import EngineHolder
from cprs_integrations.server.limits import BodySizeLimit
from cprs_integrations.server.metrics import ServerMetrics
from cprs_integrations.server.settings import ServerSettings

logger = logging.getLogger("cprs_integrations.server")


def create_app(
    engine: CPRSEngine | None = None,
    *,
    settings: ServerSettings | None = None,
    engine_factory: Callable[[], CPRSEngine] | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The server's app, around ``engine`` or the engine ``engine_factory`` builds (in the background at start-up:
    ``/readyz`` answers 503 until it is loaded).

    Args:
        engine: A built engine (tests, or an app that builds its own).
        settings: Security and limits; default :meth:`ServerSettings.from_env` (the API key from
            ``CPRS_API_KEY`` / ``CPRS_API_KEY_FILE``).
        engine_factory: Builds the engine, e.g. ``lambda: CPRSEngine.from_pretrained(path, device="cuda")``.
        on_load_error: Called when ``engine_factory`` fails (``cprs serve`` stops the server).

    Raises:
        ValueError: neither or both of ``engine`` and ``engine_factory``.

    Examples:
        >>> app = create_app(CPRSEngine.from_pretrained(), settings=ServerSettings(api_key="s3cret"))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    settings = settings if settings is not None else ServerSettings.from_env()
    holder = EngineHolder(engine, engine_factory, on_load_error)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.api_key is None:
            logger.warning("cprs server: no API key (CPRS_API_KEY): every route is open")
        holder.start()
        yield
        await holder.stop()

    app = FastAPI(
        title="cprs-integrations server",
        version=__version__,
        description="Query-guided context compression (QwenLong-CPRS): one shared critic, batched across requests.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.metrics = ServerMetrics(lambda: _engine_stats(holder))
    for router in (routes.router, compat.router, *ops.ops_routers(settings.metrics_open, settings.docs_open)):
        app.include_router(router)
    for kind, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(kind, handler)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=app.state.metrics)  # added last: outermost
    return app


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    """422 in the official shape on the official route, in ours elsewhere."""
    if request.url.path == compat.COMPAT_PATH and isinstance(error, RequestValidationError):
        return await compat.on_compat_validation_error(request, error)
    return await on_validation_error(request, error)


def _engine_stats(holder: EngineHolder) -> tuple[dict[str, float], int, int] | None:
    engine = holder.loaded
    if engine is None:
        return None
    return engine.stats(), engine.batch_size, holder.admission(engine).in_flight
