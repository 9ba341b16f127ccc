"""Error answers: one JSON shape (``{"error": {"type", "message", "request_id", "limit" | "fields"}}``), never a
stack trace. Engine errors are mapped here, in one place:

=========================  ======  ==============================================================
cause                      status  ``error.type``
=========================  ======  ==============================================================
no or wrong API key        401     ``unauthorized`` (with ``WWW-Authenticate: Bearer``)
unknown route / method     404/405 ``not_found`` / ``method_not_allowed``
body, texts, characters    413     ``limit_exceeded`` (``limit`` names the setting)
invalid field              422     ``invalid_request`` (``fields``: dotted paths, e.g. ``options.target_ratio``)
engine queue full          429     ``queue_full`` (with ``Retry-After``)
critic not loaded yet      503     ``not_ready`` (with ``Retry-After``)
request time limit         504     ``timeout`` (``limit`` is ``request_timeout_s``)
anything else              500     ``internal_error`` (logged with its traceback, server side only)
=========================  ======  ==============================================================
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cprs_integrations.engine.scheduler import QueueFullError

T = TypeVar("T")

#: HTTP status of a request whose client went away before the answer (nginx's convention; only logged).
CLIENT_CLOSED = 499


class ApiError(Exception):
    """An error answer: status, ``error.type``, message, extra ``error`` members and headers."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.status, self.type, self.message = status, type, message
        self.headers = headers or {}
        self.extra = {k: v for k, v in extra.items() if v is not None}


class ClientDisconnected(Exception):
    """The client closed the connection before the answer: the engine's work for it was withdrawn."""


def error_body(type: str, message: str, request_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON error object (see :class:`~cprs_integrations.api.schemas.ErrorResponse`)."""
    return {"error": {"type": type, "message": message, "request_id": request_id, **extra}}


def error_response(
    status: int,
    type: str,
    message: str,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """An error answer with its body."""
    return JSONResponse(error_body(type, message, request_id, **extra), status_code=status, headers=headers)


def request_id_of(request: Request) -> str | None:
    """The request's id (set by the access middleware)."""
    return getattr(request.state, "request_id", None)


def field_errors(error: RequestValidationError) -> list[dict[str, str]]:
    """pydantic's errors as ``{"field", "message", "type"}``: dotted paths without the ``body`` prefix, no input
    values echoed back (texts can be megabytes)."""
    out = []
    for detail in error.errors():
        loc = [part for part in detail.get("loc", ()) if part != "body"]
        field = ""
        for part in loc:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        message = str(detail.get("msg", "invalid")).removeprefix("Value error, ")
        if detail.get("type") == "json_invalid":
            field, message = "body", f"not valid JSON: {detail.get('ctx', {}).get('error', message)}"
        out.append({"field": field or "body", "message": message, "type": str(detail.get("type", "value_error"))})
    return out


def validation_message(fields: list[dict[str, str]]) -> str:
    """One line naming every invalid field."""
    return "invalid request: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields)


async def on_api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return error_response(
        error.status, error.type, error.message, request_id_of(request), headers=error.headers, **error.extra
    )


async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    fields = field_errors(error)
    return error_response(422, "invalid_request", validation_message(fields), request_id_of(request), fields=fields)


async def on_http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    kind = kinds.get(error.status_code, "http_error")
    message = error.detail if isinstance(error.detail, str) else json.dumps(error.detail)
    return error_response(
        error.status_code, kind, message, request_id_of(request), headers=dict(error.headers or {}) or None
    )


async def on_client_disconnected(request: Request, error: Exception) -> Response:
    return Response(status_code=CLIENT_CLOSED)  # nobody reads it: the status is for the access log and metrics


EXCEPTION_HANDLERS = {
    ApiError: on_api_error,
    ClientDisconnected: on_client_disconnected,
    RequestValidationError: on_validation_error,
    StarletteHTTPException: on_http_error,
}


async def engine_call(request: Request, work: Awaitable[T], timeout: float, retry_after_s: int) -> T:
    """Await ``work`` (an engine call) within ``timeout`` seconds, cancelled when the client goes away; its
    errors become :class:`ApiError` answers (module table).

    Raises:
        ApiError: 504 past ``timeout``, 429 on a full queue, 422 for what the engine refused (``ValueError`` /
            ``TypeError``: e.g. more critic tokens than ``max_input_tokens``).
        ClientDisconnected: the client closed the connection first (``work`` is cancelled: the engine withdraws
            its queued windows).
    """
    task = asyncio.ensure_future(asyncio.wait_for(work, timeout))
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
    if not task.done() or task.cancelled():
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected
    try:
        return task.result()
    except (TimeoutError, asyncio.TimeoutError):
        raise ApiError(
            504,
            "timeout",
            f"the request did not finish within {timeout:g} s; its queued windows were withdrawn",
            limit="request_timeout_s",
        ) from None
    except QueueFullError as error:
        raise ApiError(
            429, "queue_full", f"the engine's queue is full: {error}", headers={"Retry-After": str(retry_after_s)}
        ) from None
    except (ValueError, TypeError) as error:
        raise ApiError(422, "invalid_request", str(error)) from None


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body is already read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
