"""From per-token B/I/O/E probabilities to kept character spans: tag decoding, unit scores, budgets, assembly.

Two modes:

* **tags** (official QwenLong-CPRS behaviour): argmax tag per token, the B-anchored gap fill (gaps shorter than
  ``gap_fill_tokens`` between tagged tokens become I), spans from any non-O token to the next O or B, spans of at
  most ``min_span_tokens`` tokens dropped; for sentence / paragraph / chunk granularity each span is widened to the
  units it touches. No budget: the ratio is whatever the tags give.
* **budget**: every unit (word, sentence, paragraph, chunk) is scored as the sigmoid of the mean keep log-odds of its
  tokens (keep = 1 - P(O)), units are ranked over all texts (or per text), taken greedily while they fit the token
  budget, and put back in input order. The assembled text is re-counted and the weakest unit dropped until the
  budget holds, so a budget is never exceeded.

No torch here.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cprs_integrations.models.base import TAG_B, TAG_E, TAG_I, TAG_O

_EPS = 1e-6


@dataclass(frozen=True)
class Selection:
    """Kept spans of one text: ``(k, 2)`` char offsets (sorted, disjoint) and their scores."""

    spans: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> Selection:
        return Selection(np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64))


# ----------------------------------------------------------------------------------------------- unit scoring


def keep_log_odds(probs: np.ndarray) -> np.ndarray:
    """Per-token ``log(P(keep) / P(O))`` with ``P(keep) = 1 - P(O)``."""
    p_drop = np.clip(probs[:, TAG_O].astype(np.float64), _EPS, 1.0 - _EPS)
    return np.log1p(-p_drop) - np.log(p_drop)


def token_unit_index(units: np.ndarray, token_offsets: np.ndarray) -> np.ndarray:
    """For each token, the index of the unit containing its first character, or -1."""
    if len(units) == 0 or len(token_offsets) == 0:
        return np.full(len(token_offsets), -1, dtype=np.int64)
    starts = token_offsets[:, 0]
    idx = np.searchsorted(units[:, 0], starts, side="right") - 1
    inside = (idx >= 0) & (starts < units[np.clip(idx, 0, None), 1])
    return np.where(inside, idx, -1)


def unit_log_odds(units: np.ndarray, token_offsets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Mean keep log-odds of each unit's scored tokens (``-inf`` for a unit without any)."""
    if len(units) == 0:
        return np.zeros(0, dtype=np.float64)
    idx = token_unit_index(units, token_offsets)
    logits = keep_log_odds(probs)
    valid = (idx >= 0) & ~np.isnan(logits)  # NaN: a token the critic did not read (coarse filter)
    logits = logits[valid]
    sums = np.bincount(idx[valid], weights=logits, minlength=len(units))
    counts = np.bincount(idx[valid], minlength=len(units))
    return np.divide(sums, counts, out=np.full(len(units), -np.inf), where=counts > 0)


def unit_scores(units: np.ndarray, token_offsets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Score of each unit: sigmoid of the mean keep log-odds of its tokens (0.0 for a unit without tokens)."""
    return 1.0 / (1.0 + np.exp(-unit_log_odds(units, token_offsets, probs)))


# ------------------------------------------------------------------------------------------------- tags mode


def gap_fill(tags: np.ndarray, gap_fill_tokens: int) -> np.ndarray:
    """Official gap fill: from each B, walk right over tagged tokens; an O-gap shorter than ``gap_fill_tokens``
    before the next tagged token becomes I; stop at a B, after an E, or at a longer gap. Returns a new array."""
    out = tags.copy()
    tagged = np.flatnonzero(tags != TAG_O)
    k = 0
    while k < len(tagged):
        position = int(tagged[k])
        k += 1
        if tags[position] != TAG_B:
            continue
        previous = position
        while k < len(tagged):
            j = int(tagged[k])
            if tags[j] == TAG_B or j - previous >= gap_fill_tokens:
                break
            out[previous + 1 : j] = TAG_I
            previous = j
            k += 1
            if tags[j] == TAG_E:
                break
    return out


def tag_spans(tags: np.ndarray) -> list[tuple[int, int]]:
    """Token spans ``[start, end)``: a span starts at any non-O token and runs to the next O or B."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, tag in enumerate(tags.tolist()):
        if tag == TAG_O:
            if start is not None:
                spans.append((start, i))
                start = None
        elif tag == TAG_B or start is None:
            if start is not None:
                spans.append((start, i))
            start = i
    if start is not None:
        spans.append((start, len(tags)))
    return spans


def select_by_tags(
    probs: np.ndarray,
    token_offsets: np.ndarray,
    units: np.ndarray | None,
    *,
    gap_fill_tokens: int = 20,
    min_span_tokens: int = 4,
) -> Selection:
    """Official argmax decoding for one text; ``units`` (if given) widen each span to whole units."""
    if len(probs) == 0:
        return Selection.empty()
    tags = gap_fill(probs.argmax(axis=1), gap_fill_tokens)
    keep_prob = 1.0 - probs[:, TAG_O].astype(np.float64)
    token_spans = [(s, e) for s, e in tag_spans(tags) if e - s > min_span_tokens]
    if not token_spans:
        return Selection.empty()
    chars = np.asarray([(token_offsets[s, 0], token_offsets[e - 1, 1]) for s, e in token_spans], dtype=np.int64)
    scores = np.asarray([keep_prob[s:e].mean() for s, e in token_spans])
    if units is not None and len(units):
        chars = _widen_to_units(chars, units)
    return _merge_overlapping(chars, scores)


def _widen_to_units(chars: np.ndarray, units: np.ndarray) -> np.ndarray:
    first = np.searchsorted(units[:, 1], chars[:, 0], side="right")  # first unit ending after the span start
    last = np.searchsorted(units[:, 0], chars[:, 1], side="left") - 1  # last unit starting before the span end
    first = np.clip(first, 0, len(units) - 1)
    last = np.clip(last, 0, len(units) - 1)
    widened = chars.copy()
    widened[:, 0] = np.minimum(chars[:, 0], units[first, 0])
    widened[:, 1] = np.maximum(chars[:, 1], units[last, 1])
    return widened


def _merge_overlapping(chars: np.ndarray, scores: np.ndarray) -> Selection:
    order = np.argsort(chars[:, 0], kind="stable")
    merged: list[list[int]] = []
    merged_scores: list[float] = []
    for i in order.tolist():
        s, e = int(chars[i, 0]), int(chars[i, 1])
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
            merged_scores[-1] = max(merged_scores[-1], float(scores[i]))
        else:
            merged.append([s, e])
            merged_scores.append(float(scores[i]))
    return Selection(np.asarray(merged, dtype=np.int64).reshape(-1, 2), np.asarray(merged_scores))


# ----------------------------------------------------------------------------------------------- budget mode


def assemble(text: str, units: np.ndarray, chosen: Sequence[int], scores: np.ndarray) -> Selection:
    """Kept spans from chosen unit indices: consecutive units merge into one span (with the text between them)."""
    if len(chosen) == 0:
        return Selection.empty()
    ordered = sorted(set(int(i) for i in chosen))
    spans: list[list[int]] = []
    span_scores: list[float] = []
    previous = None
    for i in ordered:
        if previous is not None and i == previous + 1:
            spans[-1][1] = int(units[i, 1])
            span_scores[-1] = max(span_scores[-1], float(scores[i]))
        else:
            spans.append([int(units[i, 0]), int(units[i, 1])])
            span_scores.append(float(scores[i]))
        previous = i
    return Selection(np.asarray(spans, dtype=np.int64), np.asarray(span_scores))


def join_spans(text: str, spans: np.ndarray, separator: str) -> str:
    """The kept slices joined by ``separator``."""
    return separator.join(text[int(s) : int(e)] for s, e in spans)


def merge_adjacent(text: str, selection: Selection) -> Selection:
    """Merge kept spans separated only by whitespace: they are adjacent in the input, so no separator goes there.

    Examples:
        >>> sel = Selection(np.array([[0, 2], [3, 5], [8, 9]]), np.array([0.5, 0.9, 0.1]))
        >>> merge_adjacent("A. B.  x y", sel).spans.tolist()
        [[0, 5], [8, 9]]
    """
    if len(selection.spans) < 2:
        return selection
    spans: list[list[int]] = []
    scores: list[float] = []
    for (s, e), score in zip(selection.spans.tolist(), selection.scores.tolist()):
        if spans and not text[spans[-1][1] : s].strip():
            spans[-1][1] = max(spans[-1][1], e)
            scores[-1] = max(scores[-1], score)
        else:
            spans.append([s, e])
            scores.append(score)
    return Selection(np.asarray(spans, dtype=np.int64).reshape(-1, 2), np.asarray(scores, dtype=np.float64))


class _Chosen:
    """The chosen units of each text (sorted), and the exact token cost of choosing one more.

    The cost of adding unit ``u`` is measured on its neighbourhood: the joined text of the nearest chosen units
    before and after it, with and without ``u`` (consecutive units are joined by the text between them in the
    input, others by the separator). Token counts are local at these joins, so this is the change of the whole
    text's count, and a separator is charged only where it is written (a unit that bridges two kept runs refunds
    one).
    """

    def __init__(
        self, texts: Sequence[str], units: Sequence[np.ndarray], count_tokens: Callable[[str], int], separator: str
    ):
        self.texts, self.units, self.count_tokens, self.separator = texts, units, count_tokens, separator
        self.chosen: list[list[int]] = [[] for _ in texts]

    def marginal(self, t: int, u: int) -> int:
        chosen = self.chosen[t]
        i = bisect.bisect_left(chosen, u)
        before = [chosen[i - 1]] if i > 0 else []
        after = [chosen[i]] if i < len(chosen) else []
        with_u = self._joined(t, [*before, u, *after])
        without = self._joined(t, [*before, *after]) if before or after else ""
        return self.count_tokens(with_u) - (self.count_tokens(without) if without else 0)

    def add(self, t: int, u: int) -> None:
        bisect.insort(self.chosen[t], u)

    def remove(self, t: int, u: int) -> None:
        self.chosen[t].remove(u)

    def _joined(self, t: int, indices: list[int]) -> str:
        text, units = self.texts[t], self.units[t]
        parts: list[str] = []
        previous = None
        for u in indices:
            start, end = int(units[u, 0]), int(units[u, 1])
            if previous is not None:
                parts.append(text[int(units[previous, 1]) : start] if u == previous + 1 else self.separator)
            parts.append(text[start:end])
            previous = u
        return "".join(parts)


def select_under_budgets(
    texts: Sequence[str],
    units: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    budgets: Sequence[int],
    groups: Sequence[int],
    count_tokens: Callable[[str], int],
    separator: str,
    priorities: Sequence[np.ndarray] | None = None,
    eligible: Sequence[np.ndarray] | None = None,
) -> list[Selection]:
    """Greedy selection of units under token budgets, with an exact re-count and a refill.

    1. Units are taken in rank order while the tokens they add (measured exactly on their neighbourhood, see
       :class:`_Chosen`) fit what is left of their group's budget; the separator is charged only where it is
       written.
    2. The joined text of each group is counted; while it is over budget the lowest-ranked chosen unit is dropped
       (a safety net: step 1 is exact up to rare tokenizer effects across a join).
    3. The units passed over are tried again while something was added (a unit can become cheaper when its
       neighbours are chosen: it then bridges two slices and saves a separator), then 2. again.

    Args:
        texts: The input texts.
        units: Per text, ``(m, 2)`` unit char spans (sorted, disjoint; consecutive units adjacent in the input).
        scores: Per text, ``(m,)`` unit scores in [0, 1] (what spans report).
        budgets: Token budget of each group.
        groups: For each text, the index of its budget group (all 0 for one global budget, ``i`` for per-text).
        count_tokens: The token counter of the budget.
        separator: What joins non-adjacent slices.
        priorities: Per text, the ranking key of each unit (default: ``scores``).
        eligible: Per text, ``(m,)`` bool: units that may be kept at all (default: every unit).

    Returns:
        One :class:`Selection` per text; the counted tokens of the joined texts of each group never exceed its budget.
    """
    separator_cost = count_tokens(separator) if separator else 0
    ranks = scores if priorities is None else priorities
    pending = sorted(
        (-float(ranks[t][u]), t, u)
        for t in range(len(texts))
        if budgets[groups[t]] > 0
        for u in (range(len(units[t])) if eligible is None else np.flatnonzero(eligible[t]).tolist())
    )
    unit_costs: dict[tuple[int, int], int] = {}

    def unit_cost(t: int, u: int) -> int:
        key = (t, u)
        if key not in unit_costs:
            unit_costs[key] = count_tokens(texts[t][int(units[t][u, 0]) : int(units[t][u, 1])])
        return unit_costs[key]

    state = _Chosen(texts, units, count_tokens, separator)
    remaining = list(budgets)
    for _round in range(4):
        passed_over = []
        added = 0
        for candidate in pending:
            _, t, u = candidate
            group = groups[t]
            # cheap lower bound first: a unit never adds fewer tokens than its own minus a refunded separator
            if remaining[group] <= 0 or unit_cost(t, u) - separator_cost - 2 > remaining[group]:
                passed_over.append(candidate)
                continue
            cost = state.marginal(t, u)
            if cost <= remaining[group]:
                state.add(t, u)
                remaining[group] -= cost
                added += 1
            else:
                passed_over.append(candidate)
        if not added:
            break
        remaining = _enforce_budgets(texts, units, ranks, state, budgets, groups, count_tokens, separator)
        pending = passed_over
        if all(r <= 0 for r in remaining):
            break
    return [assemble(texts[t], units[t], state.chosen[t], scores[t]) for t in range(len(texts))]


def _enforce_budgets(
    texts: Sequence[str],
    units: Sequence[np.ndarray],
    ranks: Sequence[np.ndarray],
    state: _Chosen,
    budgets: Sequence[int],
    groups: Sequence[int],
    count_tokens: Callable[[str], int],
    separator: str,
) -> list[int]:
    """Re-count each group's joined texts, drop its weakest chosen units while over budget; return what is left."""
    members: dict[int, list[int]] = {}
    for t, g in enumerate(groups):
        members.setdefault(g, []).append(t)

    def count(t: int) -> int:
        spans = assemble(texts[t], units[t], state.chosen[t], np.zeros(len(units[t]))).spans
        return count_tokens(join_spans(texts[t], spans, separator)) if len(spans) else 0

    remaining = list(budgets)
    for group, texts_in_group in members.items():
        counts = {t: count(t) for t in texts_in_group}
        while sum(counts.values()) > budgets[group]:
            weakest = min(
                ((float(ranks[t][u]), t, u) for t in texts_in_group for u in state.chosen[t]),
                default=None,
            )
            if weakest is None:
                break
            _, t, u = weakest
            state.remove(t, u)
            counts[t] = count(t)
        remaining[group] = budgets[group] - sum(counts.values())
    return remaining
