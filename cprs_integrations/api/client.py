"""RemoteCPRSEngine: the engine's ``compress`` / ``acompress`` / ``score`` / ``select`` over HTTP (``cprs serve``).

The same signatures and the same :class:`~cprs_integrations.engine.result.CompressionResult` /
:class:`~cprs_integrations.engine.result.TokenScores` objects as :class:`~cprs_integrations.engine.engine.CPRSEngine`
(``result.source`` is the caller's own text object), so every adapter takes it as ``engine=``; the critic stays on
the server, loaded once and batched across every client. ``select`` runs here, model-free, on scores from
``/v1/score``. Options are checked here before anything is sent (the same errors as in-process); a token counter
travels as its encoding name, so a callable counter is refused.

httpx, pooled: one ``httpx.Client`` for every thread, one ``httpx.AsyncClient`` per event loop. Retries only on 429
(the server's queue is full) and 503 (the critic is loading), with exponential backoff that honours
``Retry-After``; nothing else is retried (a compression is not repeated behind the caller's back).

Errors, as in-process where there is an in-process equivalent:

* ``ValueError`` / ``TypeError``: invalid query, texts or options (checked here), or a 413 / 422 answer
  (:class:`RemoteRequestError`, a ``ValueError`` carrying the ``status`` and the server's ``error`` object).
* ``TimeoutError``: the call's ``timeout`` (or the client's) passed, or the server answered 504.
* :class:`~cprs_integrations.engine.scheduler.QueueFullError`: still 429 after ``max_retries`` retries.
* ``PermissionError``: 401 (missing or wrong API key).
* ``ConnectionError``: the server cannot be reached.
* :class:`RemoteEngineError` (a ``RuntimeError``): any other error answer (503 after retries, 5xx).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cprs_integrations.api.schemas import (
    SCORING_OPTIONS,
    CompressResponse,
    ModelsResponse,
    ScoreResponse,
    options_to_json,
)
from cprs_integrations.engine.inputs import check_query, check_texts
from cprs_integrations.engine.options import CompressionOptions
from cprs_integrations.engine.result import CompressionResult, TokenScores

if TYPE_CHECKING:
    import httpx

__all__ = ["RemoteCPRSEngine", "RemoteEngineError", "RemoteRequestError"]

#: Statuses retried (queue full, not ready yet); nothing else is.
RETRY_STATUSES = frozenset({429, 503})
#: Longest wait between two tries, in seconds, whatever ``Retry-After`` says.
MAX_BACKOFF_S = 30.0


class RemoteEngineError(RuntimeError):
    """An error answer of the server that has no in-process equivalent (or 413 / 422 seen as such).

    Attributes:
        status: The HTTP status.
        error: The ``error`` object of the answer (``type``, ``message``, ``limit``, ``fields``, ...).
        request_id: The request's ``X-Request-ID`` (to find it in the server's access log).
    """

    def __init__(self, message: str, status: int, error: dict[str, Any], request_id: str | None):
        super().__init__(message)
        self.status, self.error, self.request_id = status, error, request_id


class RemoteRequestError(RemoteEngineError, ValueError):
    """The server refused the request's content: 413 (a limit, named in ``error["limit"]``) or 422 (a field)."""


class RemoteCPRSEngine:
    """A :class:`~cprs_integrations.protocol.Compressor` whose critic runs in a ``cprs serve`` process.

    Args:
        url: The server's base URL, e.g. ``"http://127.0.0.1:8000"``.
        api_key: Sent as ``Authorization: Bearer ...``; ``None`` reads ``CPRS_API_KEY`` from the environment
            (no header when that is unset too).
        timeout: Seconds one call may take, retries included (a call's own ``timeout=`` overrides it); the server
            is told, so it withdraws the call's queued windows when the time is up.
        max_retries: Retries of a call answered 429 or 503 (0: none).
        backoff_s: First wait between tries when the answer has no ``Retry-After`` (doubled each try, jittered).
        max_connections: Connections kept open to the server (per client: one for threads, one per event loop).
        headers: Extra headers for every request.

    Raises:
        ValueError: an invalid argument.

    Examples:
        >>> from cprs_integrations import RemoteCPRSEngine
        >>> engine = RemoteCPRSEngine("http://gpu-box:8000", api_key="...")  # doctest: +SKIP
        >>> [res] = engine.compress("Who founded it?", [long_text], target_ratio=0.1)  # doctest: +SKIP
        >>> CPRSDocumentCompressor(engine=engine)  # every adapter takes it  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_connections: int = 100,
        headers: dict[str, str] | None = None,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not backoff_s >= 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.max_connections = max_connections
        key = api_key if api_key is not None else os.environ.get("CPRS_API_KEY")
        self._headers = dict(headers or {})
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._client: httpx.Client | None = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------- compression

    def compress(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[CompressionResult]:
        """Compress ``texts`` for ``query`` on the server: one result per text, in input order.

        The same arguments as :meth:`CPRSEngine.compress <cprs_integrations.engine.engine.CPRSEngine.compress>`
        (``show_progress`` is accepted and ignored: the windows are scored remotely).

        Raises:
            ValueError, TypeError: an invalid query, texts or option (checked before sending), a callable
                ``token_counter``, or a 413 / 422 answer (:class:`RemoteRequestError`).
            TimeoutError: ``timeout`` passed, or 504.
            QueueFullError: 429 after ``max_retries`` retries.
            PermissionError: 401.
            ConnectionError: the server cannot be reached.
            RemoteEngineError: any other error answer.
        """
        texts, body, limit = self._compress_body(query, texts, options, timeout, overrides)
        response = CompressResponse.model_validate_json(self._request("POST", "/v1/compress", body, limit))
        return self._results(response, texts)

    async def acompress(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[CompressionResult]:
        """:meth:`compress` without blocking the event loop (httpx's async client; cancelling the task closes the
        request, and the server then withdraws its queued windows)."""
        texts, body, limit = self._compress_body(query, texts, options, timeout, overrides)
        response = CompressResponse.model_validate_json(await self._arequest("POST", "/v1/compress", body, limit))
        return self._results(response, texts)

    def score(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[TokenScores]:
        """Per-token B/I/O/E probabilities of each text, from ``POST /v1/score`` (see
        :meth:`CPRSEngine.score <cprs_integrations.engine.engine.CPRSEngine.score>`). Only ``granularity``,
        ``instruction`` and ``language`` of the options are sent: they choose what the critic reads.

        Raises:
            The errors of :meth:`compress`.
        """
        texts, query, body, limit = self._score_body(query, texts, options, timeout, overrides)
        response = ScoreResponse.model_validate_json(self._request("POST", "/v1/score", body, limit))
        return [s.to_scores(text, query) for s, text in zip(response.scores, texts)]

    async def ascore(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None = None,
        *,
        show_progress: bool | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> list[TokenScores]:
        """:meth:`score` without blocking the event loop."""
        texts, query, body, limit = self._score_body(query, texts, options, timeout, overrides)
        response = ScoreResponse.model_validate_json(await self._arequest("POST", "/v1/score", body, limit))
        return [s.to_scores(text, query) for s, text in zip(response.scores, texts)]

    def select(
        self, scored: Sequence[TokenScores], options: CompressionOptions | None = None, **overrides: Any
    ) -> list[CompressionResult]:
        """Selection alone, here (no request): :func:`cprs_integrations.engine.select.select` on scores from
        :meth:`score`, as :meth:`CPRSEngine.select <cprs_integrations.engine.engine.CPRSEngine.select>` does. Any
        token counter works here, a callable included."""
        from cprs_integrations.engine.select import select

        return select(list(scored), CompressionOptions.build(options, **overrides))

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: the critic, its window, its tokenizer and the server's limits."""
        return ModelsResponse.model_validate_json(self._request("GET", "/v1/models", None, self.timeout)).model_dump()

    # -------------------------------------------------------------------------------------------------- bodies

    def _compress_body(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None,
        timeout: float | None,
        overrides: dict[str, Any],
    ) -> tuple[list[str], dict[str, Any], float]:
        texts = check_texts(texts)
        query = check_query(query)
        built = CompressionOptions.build(options, **overrides)
        limit = self._limit(timeout)
        return texts, {"query": query, "texts": texts, "options": options_to_json(built), "timeout_s": limit}, limit

    def _score_body(
        self,
        query: str,
        texts: Sequence[str],
        options: CompressionOptions | None,
        timeout: float | None,
        overrides: dict[str, Any],
    ) -> tuple[list[str], str, dict[str, Any], float]:
        texts = check_texts(texts)
        query = check_query(query)
        built = CompressionOptions.build(options, **overrides)
        limit = self._limit(timeout)
        body = {"query": query, "texts": texts, "options": options_to_json(built, SCORING_OPTIONS), "timeout_s": limit}
        return texts, query, body, limit

    def _limit(self, timeout: float | None) -> float:
        if timeout is None:
            return self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
        return float(timeout)

    @staticmethod
    def _results(response: CompressResponse, texts: list[str]) -> list[CompressionResult]:
        if len(response.results) != len(texts):
            raise RemoteEngineError(
                f"the server answered {len(response.results)} results for {len(texts)} texts", 200, {}, None
            )
        return [r.to_result(text) for r, text in zip(response.results, texts)]

    # ----------------------------------------------------------------------------------------------- transport

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(
                    base_url=self.url, headers=self._headers, limits=self._limits(httpx), timeout=self.timeout
                )
            return self._client

    def _async_client(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(
                base_url=self.url, headers=self._headers, limits=self._limits(httpx), timeout=self.timeout
            )
            self._async_clients[loop] = client
        return client

    def _limits(self, httpx: Any) -> Any:
        return httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)

    def _request(self, method: str, path: str, body: dict[str, Any] | None, limit: float) -> bytes:
        import httpx

        client = self._sync_client()
        deadline = time.monotonic() + limit
        request_id = uuid.uuid4().hex
        for attempt in range(self.max_retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                response = client.request(
                    method, path, json=body, headers={"X-Request-ID": request_id}, timeout=_timeout(httpx, left)
                )
            except httpx.TimeoutException as e:
                raise TimeoutError(f"{method} {self.url}{path} did not answer within {limit:g} s") from e
            except httpx.TransportError as e:
                raise ConnectionError(f"cannot reach the CPRS server at {self.url}: {e}") from e
            delay = self._retry_delay(response, attempt, deadline)
            if delay is None:
                return _checked(response, request_id)
            time.sleep(delay)
        raise TimeoutError(f"{method} {self.url}{path}: no answer within {limit:g} s (retries included)")

    async def _arequest(self, method: str, path: str, body: dict[str, Any] | None, limit: float) -> bytes:
        import httpx

        client = self._async_client()
        deadline = time.monotonic() + limit
        request_id = uuid.uuid4().hex
        for attempt in range(self.max_retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                response = await client.request(
                    method, path, json=body, headers={"X-Request-ID": request_id}, timeout=_timeout(httpx, left)
                )
            except httpx.TimeoutException as e:
                raise TimeoutError(f"{method} {self.url}{path} did not answer within {limit:g} s") from e
            except httpx.TransportError as e:
                raise ConnectionError(f"cannot reach the CPRS server at {self.url}: {e}") from e
            delay = self._retry_delay(response, attempt, deadline)
            if delay is None:
                return _checked(response, request_id)
            await asyncio.sleep(delay)
        raise TimeoutError(f"{method} {self.url}{path}: no answer within {limit:g} s (retries included)")

    def _retry_delay(self, response: httpx.Response, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next try, or ``None`` when ``response`` is the answer (no retry left, not
        retryable, or no time left for the wait)."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        delay = _retry_after(response.headers.get("Retry-After"))
        if delay is None:
            delay = self.backoff_s * (2**attempt) * (1.0 + 0.25 * random.random())
        delay = min(delay, MAX_BACKOFF_S)
        return None if time.monotonic() + delay >= deadline else delay

    # --------------------------------------------------------------------------------------------------- close

    def close(self) -> None:
        """Close the pooled connections of the thread client (async clients: :meth:`aclose`)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the pooled connections of this event loop's client and of the thread client."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()

    def __enter__(self) -> RemoteCPRSEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RemoteCPRSEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        auth = "with API key" if "Authorization" in self._headers else "no API key"
        return f"RemoteCPRSEngine({self.url!r}, {auth}, timeout={self.timeout:g}, max_retries={self.max_retries})"


def _timeout(httpx: Any, seconds: float) -> Any:
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (a number of seconds or an HTTP date), ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _checked(response: httpx.Response, request_id: str) -> bytes:
    """The body of a 2xx answer; any other answer raised as its in-process equivalent (module docstring)."""
    status = response.status_code
    if 200 <= status < 300:
        return response.content
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    if not isinstance(error, dict):
        error = {}
    message = f"{error.get('message') or response.reason_phrase} (HTTP {status}, request id {request_id})"
    if status == 401:
        raise PermissionError(message)
    if status == 504:
        raise TimeoutError(message)
    if status == 429:
        from cprs_integrations.engine.scheduler import QueueFullError

        raise QueueFullError(message)
    if status in (413, 422):
        raise RemoteRequestError(message, status, error, request_id)
    raise RemoteEngineError(message, status, error, request_id)
