"""The ``/v1`` routes: compress, score, models. Every request goes through the one shared engine, awaited (never a
blocking call on the event loop), so the windows of concurrent requests are batched together by its scheduler."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from cprs_integrations.api.schemas import (
    CompressionResultJSON,
    CompressRequest,
    CompressResponse,
    ErrorResponse,
    ModelInfo,
    ModelsResponse,
    ScoreRequest,
    ScoreResponse,
    ScoreUsage,
    ServerLimits,
    TokenScoresJSON,
    Usage,
)
from cprs_integrations.engine.engine import CPRSEngine
from cprs_integrations.server.auth import require_api_key
from cprs_integrations.server.errors import engine_call
from cprs_integrations.server.holder import EngineHolder
from cprs_integrations.server.limits import check_queue, check_request_limits, check_token_counter
from cprs_integrations.server.metrics import ServerMetrics
from cprs_integrations.server.settings import ServerSettings

#: Error answers of the routes that run the engine, for the OpenAPI page.
ENGINE_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (401, "Missing or wrong API key."),
        (413, "Body, texts or characters above the server's limit (error.limit names it)."),
        (422, "Invalid field (error.fields names it)."),
        (429, "The engine's queue is full: retry after Retry-After seconds."),
        (503, "The critic is still loading."),
        (504, "The request time limit passed (error.limit: request_timeout_s)."),
    )
}

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["compression"])


@router.post("/compress", response_model=CompressResponse, responses=ENGINE_ERRORS)
async def compress(body: CompressRequest, request: Request) -> Any:
    """Compress each text for the query: one CompressionResult per text, in input order (offsets in code points of
    the text sent). Options are those of CompressionOptions; token_counter is an encoding name."""
    settings, holder, metrics = _context(request)
    check_request_limits(body.query, body.texts, settings)
    check_token_counter(body.options, settings)
    engine = holder.engine(settings.retry_after_s)
    check_queue(engine, settings.retry_after_s)
    timeout = _timeout(body.timeout_s, settings)
    options = body.options.to_options()
    admission = holder.admission(engine)
    with admission.admit(body.texts, settings.retry_after_s):
        work = engine.acompress(body.query, body.texts, options, timeout=timeout)
        results = await engine_call(request, work, timeout, settings.retry_after_s)
    timings = results[0].timings if results else {}
    admission.learn(sum(len(t) for t in body.texts), timings.get("windows", 0))
    usage = Usage(
        texts=len(body.texts),
        characters=sum(len(t) for t in body.texts),
        critic_tokens=int(timings.get("critic_tokens", 0)),
        windows=int(timings.get("windows", 0)),
        original_tokens=sum(r.original_tokens for r in results),
        compressed_tokens=sum(r.compressed_tokens for r in results),
    )
    _account(request, metrics, "/v1/compress", usage.texts, usage.characters, usage.critic_tokens)
    return CompressResponse(
        results=[CompressionResultJSON.from_result(r) for r in results],
        model=_model_name(engine, settings),
        usage=usage,
    )


@router.post("/score", response_model=ScoreResponse, responses=ENGINE_ERRORS)
async def score(body: ScoreRequest, request: Request) -> Any:
    """Per-token B/I/O/E probabilities of each text, with each critic token's (start, end) code-point offsets:
    for analysis, or for selection elsewhere (RemoteCPRSEngine.select runs it client-side)."""
    settings, holder, metrics = _context(request)
    check_request_limits(body.query, body.texts, settings)
    engine = holder.engine(settings.retry_after_s)
    check_queue(engine, settings.retry_after_s)
    timeout = _timeout(body.timeout_s, settings)
    options = body.options.to_options()
    # Awaited on the shared queue like compress: a timeout or a client that disconnects withdraws the windows.
    with holder.admission(engine).admit(body.texts, settings.retry_after_s):
        work = engine.ascore(body.query, body.texts, options, show_progress=False, timeout=timeout)
        scored = await engine_call(request, work, timeout, settings.retry_after_s)
    usage = ScoreUsage(
        texts=len(body.texts),
        characters=sum(len(t) for t in body.texts),
        critic_tokens=sum(len(s.offsets) for s in scored),
    )
    _account(request, metrics, "/v1/score", usage.texts, usage.characters, usage.critic_tokens)
    return ScoreResponse(
        scores=[TokenScoresJSON.from_scores(s, body.query) for s in scored],
        model=_model_name(engine, settings),
        usage=usage,
    )


@router.get("/models", response_model=ModelsResponse, responses={401: ENGINE_ERRORS[401], 503: ENGINE_ERRORS[503]})
async def models(request: Request) -> Any:
    """The critic this server holds: name, kind, device, window, tokenizer, and the server's limits."""
    settings, holder, _ = _context(request)
    engine = holder.engine(settings.retry_after_s)
    return ModelsResponse(data=[model_info(engine, settings)])


def model_info(engine: CPRSEngine, settings: ServerSettings) -> ModelInfo:
    """What ``GET /v1/models`` says about ``engine``."""
    critic = engine.critic
    tokenizer = getattr(critic.tokenizer, "name_or_path", None) or type(critic.tokenizer).__name__
    return ModelInfo(
        id=_model_name(engine, settings),
        kind=critic.kind,
        device=str(critic.device),
        window_tokens=engine.window_tokens,
        batch_size=engine.batch_size,
        tokenizer=str(tokenizer),
        limits=ServerLimits(
            max_body_bytes=settings.max_body_bytes,
            max_texts=settings.max_texts,
            max_chars=settings.max_chars,
            request_timeout_s=settings.request_timeout_s,
            max_queue_windows=engine.scheduler.max_queue_windows,
            max_input_tokens=engine.max_input_tokens,
            token_counters=list(settings.token_counters),
        ),
    )


def _context(request: Request) -> tuple[ServerSettings, EngineHolder, ServerMetrics]:
    state = request.app.state
    return state.settings, state.holder, state.metrics


def _timeout(asked: float | None, settings: ServerSettings) -> float:
    return settings.request_timeout_s if asked is None else min(asked, settings.request_timeout_s)


def _model_name(engine: CPRSEngine, settings: ServerSettings) -> str:
    return settings.model_name or str(engine.critic.name_or_path)


def _account(
    request: Request, metrics: ServerMetrics, route: str, texts: int, characters: int, critic_tokens: int
) -> None:
    """Add the request's size to the access log line and the throughput."""
    request.state.access.update(texts=texts, characters=characters, critic_tokens=critic_tokens)
    metrics.add_tokens(route, critic_tokens)
