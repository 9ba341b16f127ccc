"""Lexical evidence for budget mode: BM25 over selection units, fused with the critic's unit scores.

A small critic misses units whose words match the query but whose meaning it has not learnt; BM25 misses
paraphrases and chains. Ranking by ``z(critic unit log-odds) + lexical_weight x z(BM25)`` (z-scores over the units
that compete for one budget) beats both on HotpotQA (see the model card). BM25 is Okapi with the ``rank-bm25``
defaults (k1 1.5, b 0.75, negative IDFs floored at 0.25 x the mean IDF) on lower-cased ``\\w+`` words; the corpus is
the units of the budget group, and a unit is matched together with its paragraph's heading line (a short first
line such as a title), because a sentence rarely repeats the name its section is about.

No torch here.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+")
#: A paragraph's first line counts as its heading when it has at most this many words and no final period.
HEADING_MAX_WORDS = 12
K1, B, EPSILON = 1.5, 0.75, 0.25


def words(text: str) -> list[str]:
    """Lower-cased word tokens.

    Examples:
        >>> words("Who wrote 'Dune'?")
        ['who', 'wrote', 'dune']
    """
    return _WORD.findall(text.lower())


def bm25(query: str, documents: Sequence[str]) -> np.ndarray:
    """Okapi BM25 of each document for ``query`` (``rank_bm25.BM25Okapi`` defaults, same figures).

    Examples:
        >>> scores = bm25("red fox", ["the red fox", "a blue bird", "red paint"])
        >>> int(scores.argmax())
        0
    """
    return bm25_of_words(words(query), (words(document) for document in documents), len(documents))


def bm25_of_words(
    query_words: list[str],
    documents: Iterable[list[str]],
    n_docs: int,
    frequencies: Counter[str] | None = None,
) -> np.ndarray:
    """:func:`bm25` on texts split by :func:`words` (``n_docs`` of them, read once: a generator is fine).

    Args:
        frequencies: If given, filled with the number of documents holding each word.
    """
    query_counts = Counter(query_words)
    query_words = query_counts.keys()
    # One pass, keeping per document only its length and the counts of the query's words (memory follows the
    # vocabulary and the query, not the corpus: 400K sentences of a 10M-token text need no per-sentence Counter).
    lengths = np.zeros(n_docs, dtype=np.float64)
    document_frequency: Counter[str] = Counter() if frequencies is None else frequencies
    matches: list[tuple[int, str, int]] = []  # (document, query word, its count there)
    for d, tokens in enumerate(documents):
        lengths[d] = len(tokens)
        distinct = set(tokens)
        document_frequency.update(distinct)
        for word in distinct & query_words:
            matches.append((d, word, tokens.count(word)))
    if not n_docs or lengths.sum() == 0:
        return np.zeros(n_docs)
    idf = {w: math.log(n_docs - df + 0.5) - math.log(df + 0.5) for w, df in document_frequency.items()}
    floor = EPSILON * sum(idf.values()) / len(idf)
    norm = K1 * (1 - B + B * lengths / lengths.mean())
    scores = np.zeros(n_docs)
    # Each distinct query word once, times its count (rank_bm25 sums over repeats): a 5,000-word query stays cheap.
    for d, word, tf in matches:
        weight = idf[word] if idf[word] >= 0 else floor
        if weight:
            scores[d] += query_counts[word] * weight * tf * (K1 + 1) / (tf + norm[d])
    return scores


def zscore(values: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` over the finite values; non-finite ones first become the minimum; all equal -> zeros.

    Examples:
        >>> zscore(np.array([1.0, 3.0])).tolist()
        [-1.0, 1.0]
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    values = np.where(finite, values, values[finite].min())
    std = values.std()
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def paragraph_headings(text: str, paragraphs: np.ndarray) -> list[tuple[int, int] | None]:
    """For each paragraph span, the char span of its heading line, or ``None``.

    A heading is a first line followed by more lines, with at most :data:`HEADING_MAX_WORDS` words and not ending in
    ``.``, ``!`` or ``?`` (a title, a Markdown ``#`` line, a label).
    """
    headings: list[tuple[int, int] | None] = []
    for start, end in paragraphs.tolist():
        newline = text.find("\n", start, end)
        line = text[start:newline].strip() if newline >= 0 else ""
        is_heading = (
            bool(line)
            and text[newline:end].strip() != ""
            and len(words(line)) <= HEADING_MAX_WORDS
            and not line.endswith((".", "!", "?"))
        )
        headings.append((start, newline) if is_heading else None)
    return headings


def unit_documents(text: str, units: np.ndarray, paragraphs: np.ndarray) -> list[str]:
    """The text BM25 sees for each unit: its paragraph's heading (unless the unit holds it) then the unit itself."""
    headings = paragraph_headings(text, paragraphs)
    starts = paragraphs[:, 0] if len(paragraphs) else np.zeros(0, dtype=np.int64)
    documents = []
    for start, end in units.tolist():
        p = int(np.searchsorted(starts, start, side="right")) - 1
        heading = headings[p] if 0 <= p < len(headings) else None
        body = text[start:end]
        if heading is not None and not (start <= heading[0] < end):
            body = f"{text[heading[0] : heading[1]].strip()}. {body}"
        documents.append(body)
    return documents


def fused_priorities(
    query: str,
    texts: Sequence[str],
    units: Sequence[np.ndarray],
    paragraphs: Sequence[np.ndarray],
    critic_log_odds: Sequence[np.ndarray],
    groups: Sequence[int],
    weight: float,
    eligible: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Per text, the ranking priority of each unit: ``z(critic) + weight x z(BM25)`` within its budget group.

    Args:
        query: The query.
        texts: The texts.
        units: Per text, ``(m, 2)`` unit char spans.
        paragraphs: Per text, its paragraph char spans (for headings).
        critic_log_odds: Per text, the critic's mean keep log-odds of each unit (``-inf`` for a unit without tokens).
        groups: Budget group of each text: BM25 statistics and z-scores are taken over a group's units.
        weight: ``lexical_weight``; 0 ranks by the critic alone (the z-score keeps its order).
        eligible: Per text, the units that may be kept; the others get ``-inf``. ``None``: all units. The z-scores
            are taken over all units of the group either way, a unit without a critic score (no tokens, or in a
            window the coarse filter did not read) counting as the group's lowest score (as before the coarse
            filter; units below ``score_threshold`` count too). A call whose filter read a fifth of the windows
            then weighs BM25 against the critic about as a call that read them all: the critic's statistics move a
            little (unread units sit at the minimum instead of their own scores), BM25's not at all. Measured on
            HotpotQA in 128K tokens at a 256-token budget, 24 questions: recall equal to ``off`` (0.878), against
            0.850 with z-scores over the read units only (``benchmarks/coarse_filter.py``).
    """
    priorities: list[np.ndarray] = [np.zeros(0) for _ in texts]
    members: dict[int, list[int]] = {}
    for t, g in enumerate(groups):
        members.setdefault(g, []).append(t)
    for texts_in_group in members.values():
        sizes = [len(units[t]) for t in texts_in_group]
        mask = np.concatenate(
            [np.ones(sizes[k], dtype=bool) if eligible is None else eligible[t] for k, t in enumerate(texts_in_group)]
        )
        critic = np.concatenate([np.asarray(critic_log_odds[t], dtype=np.float64) for t in texts_in_group])
        documents = [d for t in texts_in_group for d in unit_documents(texts[t], units[t], paragraphs[t])]
        lexical = bm25(query, documents) if weight else np.zeros(len(documents))
        fused = np.where(mask, zscore(critic) + weight * zscore(lexical), -np.inf)
        for t, piece in zip(texts_in_group, np.split(fused, np.cumsum(sizes)[:-1])):
            priorities[t] = piece
    return priorities


def __getattr__(name: str) -> Any:
    # Deprecated in 0.2 (moved to CompressionOptions, the one declaration of every option); removed in 0.3.
    import warnings

    if name == "DEFAULT_LEXICAL_WEIGHT":
        from cprs_integrations.engine.options import DEFAULT_LEXICAL_WEIGHT

        warnings.warn(
            "cprs_integrations.engine.lexical.DEFAULT_LEXICAL_WEIGHT moved to cprs_integrations.engine.options",
            DeprecationWarning,
            stacklevel=2,
        )
        return DEFAULT_LEXICAL_WEIGHT
    if name == "check_lexical_weight":
        warnings.warn(
            "check_lexical_weight is deprecated: CompressionOptions(lexical_weight=...) checks it",
            DeprecationWarning,
            stacklevel=2,
        )

        def check_lexical_weight(lexical_weight: Any) -> float:
            from cprs_integrations.engine.options import CompressionOptions

            return CompressionOptions(lexical_weight=lexical_weight).lexical_weight

        return check_lexical_weight
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
