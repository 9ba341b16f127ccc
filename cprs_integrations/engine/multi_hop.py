"""Multi-hop selection: further critic passes whose prefix carries the query plus the best units found so far.

The critic reads one window at a time, so a fact that only refers to another (the second hop of a bridge question,
the next link of a variable chain: ``VAR B = VAR A`` says nothing about the value asked) looks like any other
sentence. With ``hops=h`` (``CompressionOptions.hops``, budget mode), after the first pass the engine repeats up to
``h - 1`` times:

1. **Evidence.** Select under the call's budget with the scores so far. When the query holds a rare key term (an
   identifier or number occurring at most :data:`CHASE_WINDOWS` times in the texts) and kept spans share one, the
   evidence is the kept spans linked to the query through such terms (sharing one with the query or with a span
   linked already): a link of a decoy chain looks as much like an answer to the critic as a true one, but shares no
   name with the asked value. Else it is the kept spans the critic would keep on its own (keep score of at least
   :data:`EVIDENCE_MIN_SCORE`; else the best one alone). Best first, at most :data:`EVIDENCE_SPANS` and
   :data:`EVIDENCE_CHARS` characters in all, it joins the query: :func:`~cprs_integrations.engine.prompts.hop_query`
   (the critic was trained with this form: ``training/hard_tasks``).
2. **Candidates.** Only windows that hold a kept span, plus windows holding a key term of the evidence that the
   query lacks (an identifier or number found in at most :data:`CHASE_WINDOWS` windows: the next link of a chain,
   even in a window the coarse filter skipped), are scored again; the rest keep their scores.
3. **Rescoring.** The candidates' scores are replaced by the new pass's (windows too long for the longer prefix are
   scored in pieces). When the evidence is linked to the query (rule 1), budget mode's BM25 fusion reads the query
   and the evidence's key terms (:func:`lexical_query`): a unit naming what the evidence names ranks higher, as in
   query expansion by relevance feedback (the critic rates every chain link alike; this is what pulls the next one
   in). Only key terms, only linked evidence: on HotpotQA test (first 300, ``hops=2``, 10x) BM25 on the query and
   every word of unlinked evidence gave 0.748, of linked evidence 0.764, its key terms 0.768, the query alone 0.774.
   The loop ends early when a pass would carry the same evidence as the last one, or when every text is kept whole
   (its budget holds it: nothing to gain).

Budget rules are unchanged: the last scores go through the same selection. Cost: each extra pass scores about the
windows the budget keeps (measured in ``benchmarks/critic_dev.py``, section ``cost``). No torch here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from cprs_integrations.engine.coarse import key_terms
from cprs_integrations.engine.result import CompressionResult

#: At most this many kept spans of the previous pass go into the prefix ...
EVIDENCE_SPANS = 4
#: ... and at most this many characters of them (about 150 critic tokens of English: the prefix may use half a
#: window; text with several characters per token, e.g. Chinese, is cut to fit the prefix).
EVIDENCE_CHARS = 600
#: A kept span is evidence when its keep score reaches this (the best span always is): spans kept only to fill the
#: budget would steer the next pass towards themselves.
EVIDENCE_MIN_SCORE = 0.5
#: A key term of the evidence pulls in the windows holding it only when it is in at most this many windows.
CHASE_WINDOWS = 4


class Evidence(NamedTuple):
    """What a further pass puts next to the query."""

    #: Kept spans, whitespace-normalised, best keep score first.
    spans: list[str]
    #: Whether they are linked to a rare key term of the query (then BM25 fusion reads them too: rule 3).
    linked: bool


def evidence_of(results: Sequence[CompressionResult], query: str = "") -> Evidence:
    """The evidence of the next pass (rule 1 above): kept spans, whitespace-normalised, best keep score first (ties:
    input order), within :data:`EVIDENCE_SPANS` spans and :data:`EVIDENCE_CHARS` characters (a longer first span is
    cut).

    Which spans: those linked to the query (:func:`linked_spans`) when the query has a rare key term and a kept span
    shares it; else the best span and those scoring at least :data:`EVIDENCE_MIN_SCORE`.
    """
    ranked = sorted(
        ((span.score, t, i) for t, r in enumerate(results) for i, span in enumerate(r.spans)),
        key=lambda item: (-item[0], item[1], item[2]),
    )
    texts = [" ".join(results[t].spans[i].slice_of(results[t].source).split()) for _, t, i in ranked]
    candidates = [(text, score) for text, (score, _, _) in zip(texts, ranked) if text]
    chosen = linked_spans([text for text, _ in candidates], query, [r.source for r in results])
    linked = bool(chosen)
    if not linked:
        chosen = [text for k, (text, score) in enumerate(candidates) if k == 0 or score >= EVIDENCE_MIN_SCORE]
    evidence: list[str] = []
    used = 0
    for text in chosen:
        if evidence and used + len(text) > EVIDENCE_CHARS:
            break
        evidence.append(text[: EVIDENCE_CHARS - used])
        used += len(evidence[-1])
        if len(evidence) == EVIDENCE_SPANS or used >= EVIDENCE_CHARS:
            break
    return Evidence(evidence, linked)


def lexical_query(query: str, evidence: Sequence[str]) -> str:
    """What BM25 fusion reads after a pass with linked evidence: the query and the evidence's key terms.

    Examples:
        >>> lexical_query("Which variables equal 71?", ["VAR QA = 71.", "VAR QB = VAR QA."])
        'Which variables equal 71? var qa 71 qb'
    """
    return " ".join([query, *key_terms(" ".join(evidence))])


def linked_spans(spans: Sequence[str], query: str, sources: Sequence[str]) -> list[str]:
    """The spans (in their order) linked to the query: sharing a rare key term with it, or with a span linked
    already (to any depth). A term is rare when it occurs, as a whole word, at most :data:`CHASE_WINDOWS` times in
    ``sources``. Empty when the query has no rare term or no span shares one.

    Examples:
        >>> text = "VAR QA = 71. VAR QB = VAR QA. VAR QX = 95. VAR QY = VAR QX."
        >>> linked_spans(["VAR QY = VAR QX.", "VAR QB = VAR QA.", "VAR QA = 71."], "Which variables equal 71?", [text])
        ['VAR QB = VAR QA.', 'VAR QA = 71.']
    """
    rare: dict[str, bool] = {}

    def rare_terms(text: str) -> set[str]:
        for term in key_terms(text):
            if term not in rare:
                rare[term] = 0 < _occurrences(term, sources, CHASE_WINDOWS + 1) <= CHASE_WINDOWS
        return {term for term in key_terms(text) if rare[term]}

    reached = rare_terms(query)
    if not reached:
        return []
    terms = [rare_terms(span) for span in spans]
    linked: set[int] = set()
    while grown := [k for k, own in enumerate(terms) if k not in linked and own & reached]:
        for k in grown:
            linked.add(k)
            reached |= terms[k]
    return [span for k, span in enumerate(spans) if k in linked]


def _occurrences(term: str, sources: Sequence[str], limit: int) -> int:
    """Whole-word, case-insensitive occurrences of ``term`` in ``sources``, counted up to ``limit``."""
    pattern = _whole_word(term)
    found = 0
    for source in sources:
        for _ in pattern.finditer(source):
            found += 1
            if found >= limit:
                return found
    return found


def _whole_word(term: str) -> re.Pattern[str]:
    """``term`` as a whole word, case-insensitive, on the original text (lower-casing may change a text's length)."""
    return re.compile(r"(?<!\w)" + re.escape(term) + r"(?!\w)", re.IGNORECASE)


def candidate_windows(
    windows: Sequence[tuple[int, int, int]],
    offsets: Sequence[np.ndarray],
    results: Sequence[CompressionResult],
    query: str,
    evidence: Sequence[str],
) -> list[int]:
    """The windows a further pass rescores (rule 2 above), in window order.

    Args:
        windows: ``(text index, token start, token end)`` of every window of the call.
        offsets: Per text, ``(n, 2)`` token character offsets.
        results: The selection of the previous pass, one per text.
        query: The user's query (its key terms are not chased: the first pass had them).
        evidence: The evidence of this pass (:func:`evidence_of`).
    """
    starts, ends, owners = _window_chars(windows, offsets)
    per_text = [np.flatnonzero(owners == t) for t in range(len(results))]
    chosen: set[int] = set()
    for mine, result in zip(per_text, results):
        for span in result.spans:
            overlap = mine[(starts[mine] < span.end) & (ends[mine] > span.start)]
            chosen.update(overlap.tolist())
    asked = set(key_terms(query))
    terms = [term for term in key_terms(" ".join(evidence)) if term not in asked]
    for term in terms:
        pattern = _whole_word(term)
        holding: set[int] = set()
        for mine, result in zip(per_text, results):
            for match in pattern.finditer(result.source):
                k = int(np.searchsorted(ends[mine], match.start(), side="right"))
                if k < len(mine) and starts[mine[k]] <= match.start():
                    holding.add(int(mine[k]))
                if len(holding) > CHASE_WINDOWS:
                    break
        if len(holding) <= CHASE_WINDOWS:
            chosen |= holding
    return sorted(chosen)


def _window_chars(
    windows: Sequence[tuple[int, int, int]], offsets: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Character start, end (exclusive) and text index of each window."""
    starts = np.asarray([int(offsets[i][s, 0]) for i, s, _ in windows], dtype=np.int64)
    ends = np.asarray([int(offsets[i][e - 1, 1]) for i, _, e in windows], dtype=np.int64)
    owners = np.asarray([i for i, _, _ in windows], dtype=np.int64)
    return starts, ends, owners
