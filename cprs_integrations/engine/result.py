"""What a compression returns: kept spans (exact slices of the input, with offsets and scores) and statistics."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Column of P(O) (drop) in a B/I/O/E probability array.
O_COLUMN = 2


@dataclass(frozen=True)
class TokenScores:
    """Per-token scores of one text, as :meth:`CPRSEngine.score` returns them and :func:`select` consumes them.

    Attributes:
        text: The scored text.
        offsets: ``(n, 2)`` int64 character offsets of the critic's tokens in ``text``.
        probs: ``(n, 4)`` float32 B/I/O/E probabilities of those tokens; NaN rows for tokens the critic did not
            read (windows the coarse filter skipped: ``coarse_filter="off"`` reads every token).
        query: The query the text was scored for (BM25 fusion needs it); after further passes (``hops``) whose
            evidence is linked to the query, what BM25 reads: the query and the evidence's key terms
            (:func:`~cprs_integrations.engine.multi_hop.lexical_query`).
    """

    text: str
    offsets: np.ndarray
    probs: np.ndarray
    query: str = ""

    @property
    def keep_probs(self) -> np.ndarray:
        """``(n,)`` keep probability ``1 - P(O)`` per token (NaN where the critic did not read the token)."""
        return 1.0 - self.probs[:, O_COLUMN]

    @property
    def read(self) -> np.ndarray:
        """``(n,)`` bool: the tokens the critic read (all of them unless the coarse filter skipped windows)."""
        return ~unread_rows(self.probs)


def unread_rows(probs: np.ndarray) -> np.ndarray:
    """``(n,)`` bool of a ``(n, 4)`` B/I/O/E array: the rows of tokens the critic did not read (NaN rows)."""
    return np.isnan(probs[:, O_COLUMN]) if len(probs) else np.zeros(0, dtype=bool)


@dataclass(frozen=True)
class KeptSpan:
    """One kept slice of the input text: ``source[start:end]``.

    Attributes:
        start: Character offset where the slice starts (inclusive).
        end: Character offset where the slice ends (exclusive).
        score: The critic's keep score of the slice in ``[0, 1]`` (the best unit inside it).
    """

    start: int
    end: int
    score: float

    def slice_of(self, source: str) -> str:
        """The text of this span in ``source``."""
        return source[self.start : self.end]


@dataclass(frozen=True)
class CompressionResult:
    """The compression of one input text.

    Attributes:
        text: The kept slices of ``source`` in input order, joined by ``separator`` where they are not adjacent.
            Empty when nothing was kept (for example an empty input text).
        spans: The kept slices as :class:`KeptSpan` (sorted, non-overlapping, merged where adjacent).
        source: The input text (the same string object, not a copy).
        original_tokens: Tokens of ``source`` under the call's token counter.
        compressed_tokens: Tokens of ``text`` under the same counter.
        granularity: The unit of selection (``token``, ``sentence``, ``paragraph``, ``chunk``).
        mode: ``budget`` or ``tags``.
        separator: What joins non-adjacent spans in ``text``.
        timings: Seconds spent per stage of the call this result came from (shared by all results of a call).
        score: The best unit score of the text (keep probability of its best unit at the call's granularity, on
            the scale of span scores; 0.0 if it has no units), useful to rank documents.
        granularity_used: The unit actually kept: ``granularity``, or a finer unit (``sentence``, ``clause``,
            ``token``) when no whole unit fitted the budget (see :mod:`cprs_integrations.engine.select`).
        empty_reason: ``None`` when something was kept, else why not: ``empty_text``, ``zero_budget``,
            ``below_score_threshold``, ``not_read`` (the coarse filter sent none of its windows to the critic),
            ``unit_too_large`` (its best unit is larger than the whole budget),
            ``outranked`` (the call's one budget went to better units of other texts),
            ``nothing_fits`` or ``no_tags`` (tags mode).

    Examples:
        >>> r = CompressionResult(text="b", spans=(KeptSpan(2, 3, 0.9),), source="a b c", original_tokens=3,
        ...                       compressed_tokens=1, granularity="token", mode="budget", separator=" ... ")
        >>> r.ratio, r.kept_fraction, r.span_texts
        (3.0, 0.3333333333333333, ['b'])
    """

    text: str
    spans: tuple[KeptSpan, ...]
    source: str
    original_tokens: int
    compressed_tokens: int
    granularity: str
    mode: str
    separator: str
    timings: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    granularity_used: str = ""
    empty_reason: str | None = None

    def __post_init__(self) -> None:
        if not self.granularity_used:
            object.__setattr__(self, "granularity_used", self.granularity)

    @property
    def ratio(self) -> float:
        """Compression ratio ``original_tokens / compressed_tokens`` (``10.0`` means 10x smaller).

        ``math.inf`` when nothing was kept from a non-empty text; ``1.0`` when the text had no tokens.
        """
        if self.compressed_tokens == 0:
            return 1.0 if self.original_tokens == 0 else math.inf
        return self.original_tokens / self.compressed_tokens

    @property
    def kept_fraction(self) -> float:
        """Share of tokens kept, ``compressed_tokens / original_tokens`` (0.0 for an empty text)."""
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 0.0

    @property
    def span_texts(self) -> list[str]:
        """The kept slices as strings."""
        return [span.slice_of(self.source) for span in self.spans]

    def to_dict(self, include_source: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (``ratio`` is ``None`` instead of infinity)."""
        ratio = self.ratio
        out: dict[str, Any] = {
            "text": self.text,
            "spans": [{"start": s.start, "end": s.end, "score": round(s.score, 6)} for s in self.spans],
            "original_tokens": self.original_tokens,
            "compressed_tokens": self.compressed_tokens,
            "ratio": None if math.isinf(ratio) else ratio,
            "granularity": self.granularity,
            "granularity_used": self.granularity_used,
            "empty_reason": self.empty_reason,
            "mode": self.mode,
            "score": round(self.score, 6),
            "timings": dict(self.timings),
        }
        if include_source:
            out["source"] = self.source
        return out

    def to_html(self, max_chars: int | None = 20000) -> str:
        """The source with kept spans highlighted (deeper shade = higher score); dropped text greyed.

        Args:
            max_chars: Show at most this many characters of the source (``None`` for all).
        """
        end_limit = len(self.source) if max_chars is None else min(len(self.source), max_chars)
        parts = [
            '<div style="font-family:sans-serif;line-height:1.5;white-space:pre-wrap">',
            f"<div><b>{self.original_tokens}</b> → <b>{self.compressed_tokens}</b> tokens "
            f"({_format_ratio(self.ratio)}, {self.granularity}, {self.mode})</div>",
        ]
        cursor = 0
        for span in self.spans:
            if span.start >= end_limit:
                break
            if span.start > cursor:
                parts.append(_dropped(self.source[cursor : span.start]))
            alpha = 0.25 + 0.65 * max(0.0, min(1.0, span.score))
            parts.append(
                f'<mark title="score {span.score:.3f}" style="background:rgba(255,196,0,{alpha:.2f})">'
                f"{html.escape(self.source[span.start : min(span.end, end_limit)])}</mark>"
            )
            cursor = min(span.end, end_limit)
        if cursor < end_limit:
            parts.append(_dropped(self.source[cursor:end_limit]))
        if end_limit < len(self.source):
            parts.append(f"<i>… {len(self.source) - end_limit} more characters</i>")
        parts.append("</div>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()


def _dropped(text: str) -> str:
    return f'<span style="color:#999">{html.escape(text)}</span>'


def _format_ratio(ratio: float) -> str:
    return "nothing kept" if math.isinf(ratio) else f"{ratio:.1f}x"
