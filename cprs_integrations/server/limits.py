"""Request limits: body size (an ASGI middleware, before the body is parsed), texts and characters (after).

Each answers 413 with ``error.limit`` naming the setting (``max_body_bytes``, ``max_texts``, ``max_chars``).
The request time limit (504) is :func:`~cprs_integrations.server.errors.engine_call`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cprs_integrations.engine.engine import CPRSEngine
from cprs_integrations.server.errors import ApiError, error_response
from cprs_integrations.server.settings import ServerSettings

#: Bytes of a refused body read and dropped before answering 413 (beyond it the connection is closed).
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Answer 413 to a body larger than ``max_bytes``: at once from ``Content-Length``, else (chunked bodies) as
    soon as the bytes received pass the limit, without reading the rest.

    Args:
        app: The ASGI app.
        max_bytes: The largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, declared, body_complete=False)
            return
        received = 0
        too_large = False
        body_complete = False

        async def counting_receive() -> Message:
            nonlocal received, too_large, body_complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large, body_complete = True, not message.get("more_body", False)
                    raise _BodyTooLarge  # the framework answers some error: dropped below, 413 sent instead
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if too_large:
            await self._refuse(scope, receive, send, None, body_complete)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, declared: int | None, body_complete: bool
    ) -> None:
        # Read (and drop) what the client still sends before answering: closing a socket with unread bytes makes
        # the kernel send a reset, which can destroy the 413 before the client reads it.
        drained_all = body_complete or await _drain(receive)
        size = f"{declared:,} bytes" if declared is not None else "more bytes"
        response = error_response(
            413,
            "limit_exceeded",
            f"the request body holds {size}, above max_body_bytes={self.max_bytes:,}",
            scope.get("state", {}).get("request_id"),
            limit="max_body_bytes",
            headers=None if drained_all else {"Connection": "close"},
        )
        await response(scope, receive, send)


async def _drain(receive: Receive) -> bool:
    """Receive and drop the rest of the body, up to :data:`DRAIN_LIMIT_BYTES`; whether it all came."""
    drained = 0
    while drained <= DRAIN_LIMIT_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return False
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def check_request_limits(query: str, texts: Sequence[str], settings: ServerSettings) -> None:
    """Refuse a request with too many texts or characters (query included).

    Raises:
        ApiError: 413 naming ``max_texts`` or ``max_chars``.
    """
    if len(texts) > settings.max_texts:
        raise ApiError(
            413,
            "limit_exceeded",
            f"the request holds {len(texts):,} texts, above max_texts={settings.max_texts:,}: split it",
            limit="max_texts",
        )
    characters = len(query) + sum(len(t) for t in texts)
    if characters > settings.max_chars:
        raise ApiError(
            413,
            "limit_exceeded",
            f"the request holds {characters:,} characters, above max_chars={settings.max_chars:,}: split it",
            limit="max_chars",
        )


def check_token_counter(options: Any, settings: ServerSettings) -> None:
    """Refuse a token counter the server does not allow (loading another could need the network).

    Raises:
        ApiError: 422 naming ``options.token_counter``.
    """
    name = options.token_counter
    if name not in settings.token_counters:
        message = f"token_counter {name!r} is not allowed here; allowed: {', '.join(settings.token_counters)}"
        raise ApiError(
            422,
            "invalid_request",
            f"invalid request: options.token_counter: {message}",
            fields=[{"field": "options.token_counter", "message": message, "type": "value_error"}],
        )


def check_queue(engine: CPRSEngine, retry_after_s: int) -> None:
    """Refuse at once, before tokenizing anything, while the engine's queue is full (the engine itself refuses
    only after tokenizing, when it learns the request's windows: under overload that work is wasted).

    Raises:
        ApiError: 429 ``queue_full`` with ``Retry-After``.
    """
    limit = engine.scheduler.max_queue_windows
    if limit is None:
        return
    queued = engine.stats()["queued_windows"]
    if queued >= limit:
        raise ApiError(
            429,
            "queue_full",
            f"the engine's queue is full ({queued:g} windows, max_queue_windows={limit}): retry later",
            headers={"Retry-After": str(retry_after_s)},
        )
