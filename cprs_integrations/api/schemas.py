"""The HTTP API's JSON shapes, generated from the engine's own types: one contract for the server and the client.

* :class:`CompressionOptionsJSON` is :class:`~cprs_integrations.engine.options.CompressionOptions` itself (every
  option, default, constraint and check inherited), except that ``token_counter`` is an encoding name: a callable
  or a tokenizer object cannot travel as JSON. Errors keep their field (``options.target_ratio``).
* :data:`CompressionResultJSON` is built from the fields of :class:`~cprs_integrations.engine.result.CompressionResult`
  (every field but ``source``, which the caller already holds; plus the derived ``ratio``), with the descriptions
  of its docstring. Offsets are Python string indices (code points).
* :class:`TokenScoresJSON` carries :class:`~cprs_integrations.engine.result.TokenScores` arrays as lists (float32
  values written exactly, so selection on them gives what the server would).

Only pydantic and numpy here: the client imports this module without FastAPI.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, computed_field, create_model, field_validator

from cprs_integrations.engine.inputs import check_query, check_texts
from cprs_integrations.engine.options import CompressionOptions
from cprs_integrations.engine.result import CompressionResult, TokenScores, unread_rows

__all__ = [
    "TAG_LABELS",
    "CompressRequest",
    "CompressResponse",
    "CompressionOptionsJSON",
    "CompressionResultJSON",
    "ErrorDetail",
    "ErrorResponse",
    "FieldError",
    "ModelInfo",
    "ModelsResponse",
    "ScoreRequest",
    "ScoreResponse",
    "ScoreUsage",
    "ServerLimits",
    "TokenScoresJSON",
    "Usage",
    "options_to_json",
    "token_counter_name",
]

#: Column order of ``probs`` in :class:`TokenScoresJSON` (as in :class:`TokenScores`).
TAG_LABELS = ("B", "I", "O", "E")
#: Fields of :class:`CompressionResult` left out of the JSON: the caller sent the text and keeps it.
RESULT_OMITTED = ("source",)
#: The options that choose what the critic reads (all that matters to ``/v1/score``): the instruction, what the
#: coarse filter reads on a long input (its budget and mode), and with ``hops`` > 1 what the selection that picks
#: each further pass's evidence needs.
SCORING_OPTIONS = (
    "granularity",
    "instruction",
    "language",
    "mode",
    "target_ratio",
    "target_tokens",
    "per_text_budget",
    "token_counter",
    "coarse_filter",
    "hops",
    "score_threshold",
    "separator",
    "lexical_weight",
    "chunk_tokens",
)


# ---------------------------------------------------------------------------------------------------- options


class CompressionOptionsJSON(CompressionOptions):
    """:class:`CompressionOptions` as JSON: the same fields, defaults and checks; ``token_counter`` is a name."""

    # pydantic's own constructor: errors stay per field (``options.target_ratio``) instead of one message.
    __init__ = BaseModel.__init__  # type: ignore[assignment]

    token_counter: str = Field(  # type: ignore[assignment]
        default="o200k_base",
        strict=True,
        description="How budget tokens are counted: a tiktoken encoding name the server allows (o200k_base and "
        "cl100k_base by default; GET /v1/models lists them).",
    )

    def to_options(self) -> CompressionOptions:
        """The :class:`CompressionOptions` this stands for (only the options given; the rest take defaults)."""
        return CompressionOptions(**{name: getattr(self, name) for name in self.model_fields_set})


def token_counter_name(counter: Any) -> str:
    """The JSON form of a token counter: an encoding name (a tiktoken ``Encoding`` gives its ``name``).

    Raises:
        TypeError: a callable, an HF tokenizer or anything else that is not a tiktoken encoding (names the option).
    """
    if isinstance(counter, str):
        return counter
    name = getattr(counter, "name", None)
    if hasattr(counter, "encode_ordinary") and isinstance(name, str):
        return name
    raise TypeError(
        f"token_counter={counter!r} cannot be sent to a CPRS server: over HTTP the option token_counter is a "
        "tiktoken encoding name (e.g. 'o200k_base' or 'cl100k_base'), not a callable or a tokenizer object; pass "
        "the name, or compress with an in-process CPRSEngine"
    )


def options_to_json(options: CompressionOptions, only: Sequence[str] | None = None) -> dict[str, Any]:
    """The options given (``model_fields_set``, optionally only those in ``only``) as a JSON object.

    Raises:
        TypeError: a token counter that has no name (see :func:`token_counter_name`).
    """
    names = [n for n in CompressionOptions.model_fields if n in options.model_fields_set]
    if only is not None:
        names = [n for n in names if n in only]
    values = {name: getattr(options, name) for name in names}
    if "token_counter" in values:
        values["token_counter"] = token_counter_name(values["token_counter"])
    return values


# ---------------------------------------------------------------------------------------------------- results


def _attribute_docs(doc: str | None) -> dict[str, str]:
    """``name -> description`` from the ``Attributes:`` section of a Google-style docstring."""
    out: dict[str, str] = {}
    if not doc or "Attributes:" not in doc:
        return out
    current: str | None = None
    for line in doc.split("Attributes:", 1)[1].splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        match = re.match(r"\s+(\w+): (.*)", line)
        if match and indent <= 8:
            current = match.group(1)
            out[current] = match.group(2).strip()
        elif indent > 8 and current is not None:
            out[current] += " " + line.strip()
        else:
            break
    return {
        k: re.sub(r":\w+:`~?[\w.]*?(\w+)`|``(.*?)``", lambda m: m.group(1) or m.group(2), v) for k, v in out.items()
    }


class _ResultBase(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a newer server may send more; an older client ignores it

    @computed_field(
        description="original_tokens / compressed_tokens (10.0 = 10x smaller); null when nothing "
        "was kept from a non-empty text."
    )  # type: ignore[prop-decorator]
    @property
    def ratio(self) -> float | None:
        original, compressed = getattr(self, "original_tokens", 0), getattr(self, "compressed_tokens", 0)
        if compressed == 0:
            return 1.0 if original == 0 else None
        return original / compressed

    def to_result(self, source: str) -> CompressionResult:
        """The :class:`CompressionResult` again, ``source`` being the caller's own text object."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values["spans"] = tuple(values["spans"])
        values["timings"] = dict(values["timings"])
        return CompressionResult(source=source, **values)

    @classmethod
    def from_result(cls, result: CompressionResult) -> _ResultBase:
        """The JSON form of ``result`` (no copy of its source)."""
        return cls.model_construct(**{name: getattr(result, name) for name in cls.model_fields})


def _result_model() -> type[_ResultBase]:
    hints = typing.get_type_hints(CompressionResult)
    docs = _attribute_docs(CompressionResult.__doc__)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(CompressionResult):
        if field.name in RESULT_OMITTED:
            continue
        description = docs.get(field.name)
        if field.default is not dataclasses.MISSING:
            info = Field(default=field.default, description=description)
        elif field.default_factory is not dataclasses.MISSING:
            info = Field(default_factory=field.default_factory, description=description)
        else:
            info = Field(description=description)
        fields[field.name] = (hints[field.name], info)
    model = create_model("CompressionResultJSON", __base__=_ResultBase, **fields)
    model.__doc__ = (
        "The compression of one input text (CompressionResult without its source: texts[i] of the request). "
        "source[start:end] is each kept span, offsets in code points."
    )
    return model


#: The JSON form of :class:`CompressionResult`, generated from its dataclass fields.
CompressionResultJSON: type[_ResultBase] = _result_model()


class TokenScoresJSON(BaseModel):
    """Per-token scores of one text (:class:`TokenScores` without the text and query the caller sent)."""

    offsets: list[list[int]] = Field(description="[start, end] code-point offsets of each critic token.")
    probs: list[list[float] | None] = Field(
        description="[B, I, O, E] probabilities of each critic token (float32 values, written exactly); null for a "
        "token the critic did not read (its window was skipped by the coarse filter)."
    )
    query: str | None = Field(
        default=None,
        description="The query the probabilities answer when it is not the request's (after further passes, hops, "
        "with evidence linked to the query: the query and the evidence's key terms, which budget mode's BM25 "
        "fusion reads); "
        "null otherwise.",
    )

    @classmethod
    def from_scores(cls, scores: TokenScores, query: str) -> TokenScoresJSON:
        """The JSON form of ``scores`` for a request with ``query`` (NaN rows, tokens not read, become ``null``)."""
        probs: list[list[float] | None] = scores.probs.tolist()
        for i in np.flatnonzero(unread_rows(scores.probs)).tolist():
            probs[i] = None
        answered = None if scores.query == query else scores.query
        return cls.model_construct(offsets=scores.offsets.tolist(), probs=probs, query=answered)

    def to_scores(self, text: str, query: str) -> TokenScores:
        """The :class:`TokenScores` again, on the caller's own ``text`` and ``query`` (``null`` rows become NaN; the
        query the scores answer when the server sent one)."""
        offsets = np.asarray(self.offsets, dtype=np.int64).reshape(-1, 2)
        rows = [[math.nan] * 4 if row is None else row for row in self.probs]
        probs = np.asarray(rows, dtype=np.float32).reshape(-1, 4)
        return TokenScores(text=text, offsets=offsets, probs=probs, query=self.query or query)


# --------------------------------------------------------------------------------------------------- requests


class _TextsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="What the user asks: it guides what is kept (non-empty).")
    texts: list[str] = Field(description="The contexts, each compressed separately (empty ones give empty results).")
    options: CompressionOptionsJSON = Field(
        default_factory=CompressionOptionsJSON, description="Compression options; omitted ones take defaults."
    )
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds the caller will wait; the server's own request time limit caps it (504 past it).",
    )

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return check_query(value)

    @field_validator("texts")
    @classmethod
    def _texts(cls, value: list[str]) -> list[str]:
        return check_texts(value)


class CompressRequest(_TextsRequest):
    """Body of ``POST /v1/compress``."""


class ScoreRequest(_TextsRequest):
    """Body of ``POST /v1/score``: the options of :data:`SCORING_OPTIONS` matter (the instruction; on a long input the
    coarse filter's budget, mode and ``coarse_filter``; ``hops`` and the selection options its evidence needs);
    tokens the critic did not read come back as ``null`` rows."""


# -------------------------------------------------------------------------------------------------- responses


class Usage(BaseModel):
    """What a compression call used."""

    texts: int = Field(description="Texts in the request.")
    characters: int = Field(description="Characters of the texts (code points).")
    critic_tokens: int = Field(description="Critic tokens of the texts (the prompt prefix not counted).")
    windows: int = Field(description="Windows scored by the critic.")
    original_tokens: int = Field(description="Budget tokens of the texts, summed.")
    compressed_tokens: int = Field(description="Budget tokens of the results, summed.")


class CompressResponse(BaseModel):
    """Answer of ``POST /v1/compress``: one result per text, in input order."""

    results: list[CompressionResultJSON] = Field(description="One result per text, in input order.")  # type: ignore[valid-type]
    model: str = Field(description="The critic that scored the texts.")
    usage: Usage


class ScoreUsage(BaseModel):
    """What a scoring call used."""

    texts: int = Field(description="Texts in the request.")
    characters: int = Field(description="Characters of the texts (code points).")
    critic_tokens: int = Field(description="Critic tokens scored (the prompt prefix not counted).")


class ScoreResponse(BaseModel):
    """Answer of ``POST /v1/score``: per text, its critic tokens' offsets and B/I/O/E probabilities."""

    scores: list[TokenScoresJSON]
    labels: tuple[str, str, str, str] = Field(default=TAG_LABELS, description="Column order of probs.")
    model: str = Field(description="The critic that scored the texts.")
    usage: ScoreUsage


class ServerLimits(BaseModel):
    """The server's limits on one request (413 past the size limits, 504 past the time limit)."""

    max_body_bytes: int
    max_texts: int
    max_chars: int
    request_timeout_s: float
    max_queue_windows: int | None = Field(description="Windows the engine's queue holds before answering 429.")
    max_input_tokens: int = Field(description="Critic tokens one request may hold.")
    token_counters: list[str] = Field(description="Encoding names allowed as options.token_counter.")


class ModelInfo(BaseModel):
    """The critic the server holds."""

    id: str = Field(description="Name or path of the critic.")
    object: Literal["model"] = "model"
    kind: str = Field(description="encoder or decoder.")
    device: str
    window_tokens: int = Field(description="Tokens per window, prompt prefix included.")
    batch_size: int = Field(description="Windows per forward pass at most.")
    tokenizer: str = Field(description="The critic's tokenizer (offsets in responses are code points regardless).")
    limits: ServerLimits


class ModelsResponse(BaseModel):
    """Answer of ``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelInfo]


class FieldError(BaseModel):
    """One invalid field of a request body."""

    field: str = Field(description="Dotted path of the field in the body, e.g. options.target_ratio or texts[1].")
    message: str
    type: str = Field(description="pydantic error type, e.g. string_type, extra_forbidden, value_error.")


class ErrorDetail(BaseModel):
    """What went wrong (never a stack trace)."""

    type: str = Field(
        description="unauthorized, invalid_request, limit_exceeded, queue_full, timeout, not_ready, not_found, "
        "method_not_allowed or internal_error."
    )
    message: str
    request_id: str | None = Field(default=None, description="The X-Request-ID of the request (also a header).")
    limit: str | None = Field(default=None, description="The limit hit (413, 504): its setting name.")
    fields: list[FieldError] | None = Field(default=None, description="The invalid fields (422).")


class ErrorResponse(BaseModel):
    """Body of every error answer."""

    error: ErrorDetail
