"""The outermost middleware: request id, access log, request metrics, and the last-resort 500.

* ``X-Request-ID``: the client's (1-128 characters of ``A-Za-z0-9._:-``) or a new one, echoed on every answer and
  in ``error.request_id``.
* One access-log line per request, a JSON object on the logger ``cprs_integrations.server.access`` (``INFO``):
  ``request_id``, ``method``, ``path``, ``route``, ``status``, ``duration_ms``, ``bytes_in``, ``bytes_out``,
  ``client``, and what the route added (``texts``, ``characters``, ``critic_tokens``). ``status`` 499: the client
  went away first.
* An exception that escapes a route is logged with its traceback (logger ``cprs_integrations.server``) and
  answered 500 ``internal_error`` without it.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cprs_integrations.server.errors import CLIENT_CLOSED, error_response
from cprs_integrations.server.metrics import ServerMetrics

access_logger = logging.getLogger("cprs_integrations.server.access")
logger = logging.getLogger("cprs_integrations.server")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestContext:
    """Request id, access log, metrics and the last-resort 500 (module docstring).

    Args:
        app: The ASGI app.
        metrics: Where requests are counted.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["access"] = {}
        status = 0
        bytes_out = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("cprs server: unhandled error (request id %s)", request_id)
            if status == 0:
                status = 500
                response = error_response(
                    500, "internal_error", "internal error; the server log has the details", request_id
                )
                await response(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
        status = status or CLIENT_CLOSED
        seconds = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.observe(route, scope["method"], status, seconds)
        client = scope.get("client")
        access_logger.info(
            json.dumps(
                {
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "bytes_in": _header(scope, b"content-length"),
                    "bytes_out": bytes_out,
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    **state["access"],
                },
                ensure_ascii=False,
            )
        )


def _request_id(scope: Scope) -> str:
    given = _header(scope, b"x-request-id")
    return given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
