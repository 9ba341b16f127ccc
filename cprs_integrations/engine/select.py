"""From scored texts to results: units, budgets, ranking, the finer fallback, assembly. No model needed.

:func:`select` is what :meth:`CPRSEngine.compress` runs after scoring, and what :meth:`CPRSEngine.select` runs on
saved :class:`~cprs_integrations.engine.result.TokenScores`; a CPU worker can call it without a loaded critic.

Rules of budget mode, in order (see also :func:`~cprs_integrations.engine.selection.select_under_budgets`):

1. A budget group is one text with ``per_text_budget``, else all texts of the call. A group whose budget is at
   least the tokens of its texts, with no ``score_threshold``, gets its texts back whole (``target_ratio=1.0`` is
   the identity at every granularity).
2. Units below ``score_threshold`` (keep probability, the critic's alone) are never kept, budget or not.
3. Units are ranked (critic, or critic fused with BM25 by ``lexical_weight``), taken greedily while they fit, the
   separator charged only where it is written (between slices that are not adjacent in the input), the exact
   token count enforced, and the room left refilled with the best units that still fit.
4. Finer fallback: when a group's budget is positive, it has eligible units, and none fits, the best unit of the
   group (by rank) is cut into finer units (sentences inside a paragraph or chunk, then clauses, then words) and
   the budget is filled from those: the coarsest level that fills at least 90% of the budget, else the level that
   fills most; ``CompressionResult.granularity_used`` says which unit was used.
5. A result that keeps nothing says why in ``CompressionResult.empty_reason``.
6. Tokens the critic did not read (NaN rows: windows the coarse filter skipped) are never kept, in either mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from cprs_integrations.engine import segment
from cprs_integrations.engine.budget import resolve_token_counter
from cprs_integrations.engine.lexical import fused_priorities
from cprs_integrations.engine.options import CompressionOptions
from cprs_integrations.engine.result import CompressionResult, KeptSpan, TokenScores, unread_rows
from cprs_integrations.engine.selection import (
    Selection,
    join_spans,
    merge_adjacent,
    select_by_tags,
    select_under_budgets,
    unit_log_odds,
)
from cprs_integrations.engine.textview import empty_spans

#: Why a result kept nothing (``CompressionResult.empty_reason``).
EMPTY_REASONS = {
    "empty_text": "the text is empty or whitespace only",
    "zero_budget": "the budget of the text's group is 0 tokens (raise target_ratio / target_tokens)",
    "below_score_threshold": "no unit of the text reaches score_threshold",
    "not_read": "the coarse filter sent none of the text's windows to the critic (coarse_filter='off' reads all)",
    "unit_too_large": "the text's best unit is larger than the whole budget (the call's budget went elsewhere)",
    "outranked": "the call's one budget went to better units of other texts",
    "nothing_fits": "not even one word of the best unit fits the budget",
    "no_tags": "tags mode: the critic tagged no span of the text",
}
#: The finer fallback stops at the coarsest level whose kept text fills at least this share of the budget; else it
#: keeps the level that filled most.
FALLBACK_FILL = 0.9
#: Finer units tried, in order, inside the best unit when no unit of a granularity fits the budget.
FALLBACK_LEVELS = {
    "paragraph": ("sentence", "clause", "token"),
    "chunk": ("sentence", "clause", "token"),
    "sentence": ("clause", "token"),
    "token": (),
}


def select(
    scored: list[TokenScores], options: CompressionOptions, *, original_tokens: list[int] | None = None
) -> list[CompressionResult]:
    """Apply ``options`` (budget or tags mode) to scored texts: one result per text, in input order.

    Tokens with NaN probabilities (windows the coarse filter skipped) are not read: a unit none of whose tokens was
    scored is never kept.

    Args:
        scored: Per text, its token offsets and B/I/O/E probabilities (e.g. from :meth:`CPRSEngine.score`).
        options: The compression options; ``instruction`` and ``language`` are not used here (scoring used them).
        original_tokens: Tokens of each text under ``options.token_counter``, when the caller counted them already.

    Raises:
        ValueError: ``lexical_weight > 0`` on texts scored for different (or unknown) queries.
    """
    started = time.perf_counter()
    count_tokens = resolve_token_counter(options.token_counter)
    texts = [s.text for s in scored]
    units = [_units(s, options.granularity, options.chunk_tokens) for s in scored]
    log_odds = [unit_log_odds(u, s.offsets, s.probs) for s, u in zip(scored, units)]
    scores = [_sigmoid(x) for x in log_odds]
    original = original_tokens if original_tokens is not None else [count_tokens(t) if t else 0 for t in texts]
    used = [options.granularity] * len(texts)
    if options.mode == "tags":
        selections = [
            select_by_tags(
                _unread_as_dropped(s.probs),
                s.offsets,
                None if options.granularity == "token" else u,
                gap_fill_tokens=options.gap_fill_tokens,
                min_span_tokens=options.min_span_tokens,
            )
            for s, u in zip(scored, units)
        ]
        reasons: list[str | None] = [
            "empty_text" if not t.strip() else None if len(sel.spans) else "no_tags"
            for t, sel in zip(texts, selections)
        ]
    else:
        selections, reasons = _select_budget(scored, units, log_odds, scores, original, count_tokens, options, used)
    timings = {"select_s": time.perf_counter() - started}
    return [
        _result(s.text, sel, original[i], count_tokens, options, timings, scores[i], used[i], reasons[i])
        for i, (s, sel) in enumerate(zip(scored, selections))
    ]


def _select_budget(
    scored: list[TokenScores],
    units: list[np.ndarray],
    log_odds: list[np.ndarray],
    scores: list[np.ndarray],
    original: list[int],
    count_tokens: Callable[[str], int],
    options: CompressionOptions,
    used: list[str],
) -> tuple[list[Selection], list[str | None]]:
    texts = [s.text for s in scored]
    n = len(texts)
    groups = list(range(n)) if options.per_text_budget else [0] * n
    budgets = options.budgets(original)
    members: dict[int, list[int]] = {}
    for t, g in enumerate(groups):
        members.setdefault(g, []).append(t)
    threshold = options.score_threshold
    read = [_was_scored(x, sc) for x, sc in zip(log_odds, scored)]
    eligible = [_eligible(s, threshold) & r for s, r in zip(scores, read)]
    priorities = None
    if options.lexical_weight > 0 and options.granularity != "token":
        priorities = _fused(scored, texts, units, log_odds, groups, options.lexical_weight, read)
    ranks = scores if priorities is None else priorities

    whole = {g for g, ts in members.items() if threshold is None and budgets[g] >= sum(original[t] for t in ts)}
    active_budgets = [0 if g in whole else b for g, b in enumerate(budgets)]
    selections = select_under_budgets(
        texts, units, scores, active_budgets, groups, count_tokens, options.separator, priorities, eligible
    )
    for t in range(n):
        if groups[t] in whole and texts[t].strip():
            best = float(scores[t].max()) if len(scores[t]) else 0.0
            selections[t] = Selection(np.asarray([[0, len(texts[t])]], dtype=np.int64), np.asarray([best]))

    for g, ts in members.items():
        if g in whole or budgets[g] <= 0 or any(len(selections[t].spans) for t in ts):
            continue
        best = _best_unit(ts, ranks, eligible)
        if best is None:
            continue
        t, u = best
        start, end = (int(x) for x in units[t][u])
        best_fill: int | None = None
        for level in FALLBACK_LEVELS[options.granularity]:
            finer = _finer_units(texts[t], start, end, level)
            if len(finer) < 2:
                continue
            finer_log_odds = unit_log_odds(finer, scored[t].offsets, scored[t].probs)
            finer_scores = _sigmoid(finer_log_odds)
            finer_eligible = [_eligible(finer_scores, threshold) & _was_scored(finer_log_odds, scored[t])]
            [picked] = select_under_budgets(
                [texts[t]],
                [finer],
                [finer_scores],
                [budgets[g]],
                [0],
                count_tokens,
                options.separator,
                None,
                finer_eligible,
            )
            if not len(picked.spans):
                continue
            kept = count_tokens(join_spans(texts[t], picked.spans, options.separator))
            if best_fill is None or kept > best_fill:
                selections[t], used[t], best_fill = picked, level, kept
            if kept >= FALLBACK_FILL * budgets[g]:
                break  # the coarsest level that fills the budget well

    reasons: list[str | None] = []
    for t, text in enumerate(texts):
        g = groups[t]
        if len(selections[t].spans):
            reasons.append(None)
        elif not text.strip():
            reasons.append("empty_text")
        elif budgets[g] <= 0:
            reasons.append("zero_budget")
        elif not read[t].any():
            reasons.append("not_read")
        elif not eligible[t].any():
            reasons.append("below_score_threshold")
        elif _too_large(texts[t], units[t], _best_unit([t], ranks, eligible), budgets[g], count_tokens):
            reasons.append("unit_too_large")
        elif any(len(selections[o].spans) for o in members[g]):
            reasons.append("outranked")
        else:
            reasons.append("nothing_fits")
    return selections, reasons


def _eligible(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """``(m,)`` bool: the units that may be kept (all, or those reaching ``score_threshold``)."""
    return np.ones(len(scores), dtype=bool) if threshold is None else scores >= threshold


def _was_scored(log_odds: np.ndarray, scored: TokenScores) -> np.ndarray:
    """``(m,)`` bool: units with at least one token the critic read (all units when it read every token)."""
    if scored.read.all():
        return np.ones(len(log_odds), dtype=bool)
    return np.isfinite(log_odds)


def _unread_as_dropped(probs: np.ndarray) -> np.ndarray:
    """Tags mode: a token the critic did not read is tagged O (an all-NaN row would otherwise argmax to B)."""
    unread = unread_rows(probs)
    if not unread.any():
        return probs
    out = probs.copy()
    out[unread] = (0.0, 0.0, 1.0, 0.0)
    return out


def _too_large(
    text: str, units: np.ndarray, best: tuple[int, int] | None, budget: int, count_tokens: Callable[[str], int]
) -> bool:
    """Whether the text's best unit (``best``, from :func:`_best_unit`) costs more than the whole budget."""
    if best is None:
        return False
    start, end = units[best[1]]
    return count_tokens(text[int(start) : int(end)]) > budget


def _fused(
    scored: list[TokenScores],
    texts: list[str],
    units: list[np.ndarray],
    log_odds: list[np.ndarray],
    groups: list[int],
    lexical_weight: float,
    read: list[np.ndarray],
) -> list[np.ndarray]:
    queries = {s.query for s in scored if s.text.strip()}
    if queries and (len(queries) > 1 or "" in queries):
        raise ValueError(
            "lexical_weight > 0 needs the one query the texts were scored for (TokenScores.query); "
            "score them with engine.score(query, texts) or pass lexical_weight=0"
        )
    paragraphs = [segment.paragraph_spans(t) if t.strip() else empty_spans() for t in texts]
    query = next(iter(queries), "")
    return fused_priorities(query, texts, units, paragraphs, log_odds, groups, lexical_weight, read)


def _best_unit(
    texts_in_group: list[int], ranks: list[np.ndarray], eligible: list[np.ndarray]
) -> tuple[int, int] | None:
    best: tuple[float, int, int] | None = None
    for t in texts_in_group:
        candidates = np.flatnonzero(eligible[t])
        if len(candidates) == 0:
            continue
        u = int(candidates[np.argmax(ranks[t][candidates])])
        if best is None or float(ranks[t][u]) > best[0]:
            best = (float(ranks[t][u]), t, u)
    return None if best is None else (best[1], best[2])


def _finer_units(text: str, start: int, end: int, level: str) -> np.ndarray:
    """Units of ``level`` (``sentence``, ``clause`` or ``token`` = words) inside ``text[start:end]``."""
    if level == "sentence":
        return segment.sentence_spans(text[start:end]) + start
    if level == "clause":
        return segment.clause_spans(text, start, end)
    return segment.word_spans(text, start, end)


def _units(scored: TokenScores, granularity: str, chunk_tokens: int) -> np.ndarray:
    if not scored.text.strip():
        return empty_spans()
    units = segment.units_for(granularity, scored.text, scored.offsets, chunk_tokens)
    return units if granularity == "token" else glue_headings(scored.text, units)


def glue_headings(text: str, units: np.ndarray) -> np.ndarray:
    """Join each Markdown heading unit to the unit after it when that unit lies in its section, so that a heading
    is kept with what follows it, never bare.

    Args:
        text: The text.
        units: ``(n, 2)`` sorted unit spans.

    Returns:
        ``(m, 2)`` spans, ``m <= n`` (the same array when the text has no headings).

    Examples:
        >>> t = "# Tides\n\nThe moon pulls the sea. Waves follow.\n\n# Winds\n\nAir moves."
        >>> glue_headings(t, segment.sentence_spans(t)).tolist()
        [[0, 32], [33, 46], [48, 67]]
    """
    headings = segment.heading_spans(text)
    if len(headings) == 0 or len(units) < 2:
        return units
    section = segment.heading_of(text, units)
    is_heading = (section >= 0) & (units[:, 0] == headings[np.clip(section, 0, None), 0])
    glue = is_heading[:-1] & (section[1:] == section[:-1])  # unit i joins unit i + 1
    if not glue.any():
        return units
    keep_start = np.concatenate([[True], ~glue])
    keep_end = np.concatenate([~glue, [True]])
    return np.stack([units[keep_start, 0], units[keep_end, 1]], axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _result(
    text: str,
    selection: Selection,
    original_tokens: int,
    count_tokens: Callable[[str], int],
    options: CompressionOptions,
    timings: dict[str, float],
    unit_scores: np.ndarray,
    granularity_used: str,
    empty_reason: str | None,
) -> CompressionResult:
    selection = merge_adjacent(text, selection)
    compressed = join_spans(text, selection.spans, options.separator)
    return CompressionResult(
        text=compressed,
        spans=tuple(KeptSpan(int(s), int(e), float(sc)) for (s, e), sc in zip(selection.spans, selection.scores)),
        source=text,
        original_tokens=original_tokens,
        compressed_tokens=count_tokens(compressed) if compressed else 0,
        granularity=options.granularity,
        mode=options.mode,
        separator=options.separator,
        timings=dict(timings),
        score=float(unit_scores.max()) if len(unit_scores) else 0.0,
        granularity_used=granularity_used,
        empty_reason=empty_reason,
    )
