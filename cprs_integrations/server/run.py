"""serve: run the app under uvicorn, one process (never several workers: each would load its own critic and
batching across requests would be lost). SIGINT / SIGTERM stop accepting connections and let the requests in
flight finish (up to ``graceful_timeout_s``), as uvicorn does; uvicorn then re-raises the signal, so the process
ends with that signal's status, as process managers expect."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from cprs_integrations.engine.engine import CPRSEngine
from cprs_integrations.server.settings import ServerSettings

logger = logging.getLogger("cprs_integrations.server")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    engine_factory: Callable[[], CPRSEngine],
    *,
    settings: ServerSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    graceful_timeout_s: float | None = None,
    log_level: str = "info",
) -> int:
    """Serve until stopped; the critic loads in the background once the port is bound.

    Args:
        engine_factory: Builds the engine (called once).
        settings: Security and limits.
        host: Interface to bind (default loopback only).
        port: TCP port.
        graceful_timeout_s: On shutdown, wait this long for requests in flight (default: the request time
            limit plus 5 s).
        log_level: uvicorn's log level.

    Returns:
        1 when the critic failed to load, else 0 (after SIGINT / SIGTERM uvicorn re-raises the signal instead).
    """
    import uvicorn

    from cprs_integrations.server.app import create_app

    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_load_error(error: BaseException) -> None:
        failures.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(settings=settings, engine_factory=engine_factory, on_load_error=on_load_error)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # the process's logging (the CLI sets it up); the access log is the app's own
        log_level=log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(graceful_timeout_s or settings.request_timeout_s + 5),
    )
    server = uvicorn.Server(config)
    server.run()
    return 1 if failures else 0
