"""``POST /qwen_long_compress_server``: the official QwenLong-CPRS server's request and response shapes, so its
clients switch by changing the URL.

Request (as the official ``src/api_utils/run_api.py`` reads it)::

    {"header": {"request_id": "..."},
     "payload": {"input": {"messages": [{"role": "system", "content": INSTRUCTION},
                                        {"role": "user", "content": QUERY},
                                        {"role": "context", "content": CONTEXT}]},
                 "parameters": {"split_with_sent": true, "min_keyword_len": 4,
                                "return_offset": false, "complete_sentence": false}}}

Answer: the request echoed, with ``payload.output.text`` the kept pieces (stripped strings, or
``[text, start, end]`` with ``return_offset``; offsets in code points of CONTEXT), ``payload.usage.input_tokens``
and ``header.status_code`` / ``status_name`` / ``status_message`` / ``finished``. Errors keep that shape too
(``payload.output`` ``{"is_match": false}``, ``header.status_code`` the HTTP status).

Mapping: our ``tags`` mode (the official argmax decoding with its gap fill of 20 tokens); ``min_keyword_len`` is
``min_span_tokens``; ``complete_sentence`` is sentence granularity (spans grown to whole sentences), else token
granularity; the system message is the critic's instruction (empty: our template). ``split_with_sent`` and
``batch_size`` are accepted and have no effect: windows always end at sentence or paragraph boundaries, and
batching is the shared scheduler's. ``input_tokens`` counts the context's critic tokens (the official also counts
the prompt prefix once per window).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cprs_integrations.engine.inputs import check_query, check_texts
from cprs_integrations.engine.options import CompressionOptions
from cprs_integrations.server.auth import require_api_key
from cprs_integrations.server.errors import (
    ApiError,
    engine_call,
    error_body,
    field_errors,
    request_id_of,
    validation_message,
)
from cprs_integrations.server.limits import check_queue, check_request_limits
from cprs_integrations.server.routes import ENGINE_ERRORS

#: The official route.
COMPAT_PATH = "/qwen_long_compress_server"
#: Pieces the official server drops (``clean_preds``): those made only of this punctuation.
_DROPPED_PIECES = "（），。！"
#: ``header.status_name`` of each error status.
_STATUS_NAMES = {
    400: "InvalidInputError",
    401: "Unauthorized",
    413: "LimitExceeded",
    422: "SchemaError",
    429: "QueueFull",
    503: "NotReady",
    504: "Timeout",
}


class OfficialMessage(BaseModel):
    """One message: ``system`` (instruction), ``user`` (query) or ``context`` (the text)."""

    role: Literal["system", "user", "context"]
    content: str


class OfficialInput(BaseModel):
    messages: list[OfficialMessage] = Field(
        min_length=3, max_length=3, description="Exactly [system, user, context], in that order."
    )

    @field_validator("messages")
    @classmethod
    def _roles(cls, messages: list[OfficialMessage]) -> list[OfficialMessage]:
        if [m.role for m in messages] != ["system", "user", "context"]:
            raise ValueError('messages must be [system, user, context] (roles "system", "user", "context")')
        check_query(messages[1].content)
        check_texts([messages[2].content])
        return messages


class OfficialParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    split_with_sent: bool = Field(default=True, description="Accepted; windows always end at sentence boundaries.")
    min_keyword_len: int = Field(default=4, ge=0, description="Pieces of at most this many critic tokens are dropped.")
    return_offset: bool = Field(default=False, description="Pieces as [text, start, end] instead of text.")
    complete_sentence: bool = Field(default=False, description="Grow pieces to whole sentences.")
    batch_size: int = Field(default=1, ge=1, description="Accepted; batching is the server's.")


class OfficialPayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: OfficialInput
    parameters: OfficialParameters = Field(default_factory=OfficialParameters)


class OfficialRequest(BaseModel):
    """The official server's request body."""

    model_config = ConfigDict(extra="allow")

    header: dict[str, Any] = Field(default_factory=dict, description="Echoed back (request_id, ...).")
    payload: OfficialPayload


router = APIRouter(dependencies=[Depends(require_api_key)], tags=["official compatibility"])


@router.post(COMPAT_PATH, responses=ENGINE_ERRORS)
async def qwen_long_compress_server(body: OfficialRequest, request: Request) -> Any:
    """The official QwenLong-CPRS route: kept pieces of the context in payload.output.text (tags mode)."""
    state = request.app.state
    settings = state.settings
    try:
        system, user, context = (m.content for m in body.payload.input.messages)
        check_request_limits(user, [context], settings)
        parameters = body.payload.parameters
        options = CompressionOptions(
            mode="tags",
            granularity="sentence" if parameters.complete_sentence else "token",
            min_span_tokens=parameters.min_keyword_len,
            instruction=system if system.strip() else None,
        )
        engine = state.holder.engine(settings.retry_after_s)
        check_queue(engine, settings.retry_after_s)
        timeout = settings.request_timeout_s
        admission = state.holder.admission(engine)
        with admission.admit([context], settings.retry_after_s):
            work = engine.acompress(user, [context], options, timeout=timeout)
            [result] = await engine_call(request, work, timeout, settings.retry_after_s)
        admission.learn(len(context), result.timings.get("windows", 0))
    except ApiError as error:
        return official_error(
            body.model_dump(), error.status, error.type, error.message, error.headers, request_id_of(request)
        )
    pieces: list[Any] = []
    for span in result.spans:
        piece = context[span.start : span.end].strip()
        if not piece or piece in _DROPPED_PIECES:
            continue
        pieces.append([piece, span.start, span.end] if parameters.return_offset else piece)
    tokens = int(result.timings.get("critic_tokens", 0))
    request.state.access.update(texts=1, characters=len(context), critic_tokens=tokens)
    state.metrics.add_tokens(COMPAT_PATH, tokens)
    answer = body.model_dump()
    answer["payload"]["output"] = {"text": pieces}
    answer["payload"]["usage"] = {"input_tokens": tokens}
    answer["header"].update(status_code=200, status_name="Success", status_message="Success", finished=True)
    return answer


def official_error(
    data: dict[str, Any],
    status: int,
    type: str,
    message: str,
    headers: dict[str, str] | None,
    request_id: str | None,
) -> JSONResponse:
    """An error in the official shape (``header.status_*``, ``payload.output.is_match`` false), plus our
    ``error`` object, with the HTTP status of the error."""
    header = data.get("header") if isinstance(data.get("header"), dict) else {}
    payload = data.get("payload") if isinstance(data.get("payload"), dict) else {}
    answer = {
        "header": {
            **header,
            "status_code": status,
            "status_name": _STATUS_NAMES.get(status, "InternalError"),
            "status_message": message,
            "finished": True,
        },
        "payload": {**payload, "output": {"is_match": False}, "usage": {"input_tokens": -1, "output_tokens": -1}},
        **error_body(type, message, request_id),
    }
    return JSONResponse(answer, status_code=status, headers=headers or None)


async def on_compat_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """A 422 of the official route, in its shape (the body echoed when it was JSON)."""
    fields = field_errors(error)
    body = error.body if isinstance(error.body, dict) else {}
    return official_error(body, 422, "invalid_request", validation_message(fields), None, request_id_of(request))
