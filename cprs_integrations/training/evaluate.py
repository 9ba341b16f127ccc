"""Recall of the spans that must be kept, at several ratios, for a critic and for BM25: ``cprs eval --data FILE``.

* A span counts as kept when at least :data:`MIN_COVERED` (90%) of its characters lie in kept spans (the rule of
  the benchmarks, ``benchmarks/metrics.py``, which imports it from here).
* **critic**: the engine as users run it (default options, BM25 fusion by ``lexical_weight`` included) at each
  ``target_ratio``, each record compressed on its own for its query, granularity and instruction. Scores are taken
  once per record with ``coarse_filter="off"`` and selected at every ratio; the coarse filter only acts from 32K
  critic tokens, so for records below that this is what ``compress`` does.
* **bm25**: BM25 alone over the record's sentences (each matched with its paragraph's heading line, as the engine's
  fusion does), filled by the engine's greedy selection under the same o200k budget.
* **threshold**: the ``score_threshold`` (the critic's unit keep probability) that keeps ``target_recall`` of the
  spans with no budget, and the share of the characters it keeps then; a guide for choosing ``score_threshold``.

Recall is over spans (micro): a record with three spans weighs three times one with one; records with no span
(negative examples) count in ``records`` but not in recall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cprs_integrations.engine import segment
from cprs_integrations.engine.budget import resolve_token_counter
from cprs_integrations.engine.lexical import bm25, unit_documents
from cprs_integrations.engine.options import CompressionOptions
from cprs_integrations.engine.select import glue_headings
from cprs_integrations.engine.selection import select_under_budgets, unit_log_odds
from cprs_integrations.training.data import Example

#: Share of a span's characters that must lie in kept spans for it to count as kept.
MIN_COVERED = 0.9
#: Ratios reported by default.
DEFAULT_RATIOS = (0.05, 0.1, 0.2, 0.3)
#: Share of spans the suggested ``score_threshold`` keeps.
DEFAULT_TARGET_RECALL = 0.9


def covered_share(span: tuple[int, int], kept: np.ndarray) -> float:
    """Share of the characters of ``span`` that lie inside the (sorted, disjoint) ``kept`` spans.

    Examples:
        >>> covered_share((0, 10), np.array([[0, 4], [5, 10]]))
        0.9
    """
    start, end = span
    if end <= start:
        return 1.0
    kept = np.asarray(kept, dtype=np.int64).reshape(-1, 2)
    if len(kept) == 0:
        return 0.0
    overlap = np.clip(np.minimum(kept[:, 1], end) - np.maximum(kept[:, 0], start), 0, None)
    return float(overlap.sum()) / (end - start)


def span_kept(span: tuple[int, int], kept: np.ndarray) -> bool:
    """Whether ``span`` counts as kept: at least :data:`MIN_COVERED` of its characters in ``kept``."""
    return covered_share(span, kept) >= MIN_COVERED


def evaluate(
    engine: Any,
    examples: Sequence[Example],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    target_recall: float = DEFAULT_TARGET_RECALL,
) -> dict[str, Any]:
    """Span recall of the critic (engine defaults) and of BM25 at each ratio, and a suggested threshold.

    Args:
        engine: A :class:`~cprs_integrations.engine.engine.CPRSEngine`.
        examples: Records with their keep spans (e.g. :func:`~cprs_integrations.training.user_data.to_example`).
        ratios: ``target_ratio`` values, each in (0, 1].
        target_recall: Share of spans the suggested ``score_threshold`` must keep.

    Returns:
        ``{"records", "spans", "ratios": [{"ratio", "critic", "bm25"}], "threshold": {"target_recall",
        "score_threshold", "recall", "kept_share"}}``; recalls in [0, 1] (``None`` when there is no span).

    Raises:
        ValueError: a ratio outside (0, 1] (the options check it), or no example.
    """
    if not examples:
        raise ValueError("no records to evaluate")
    options = [CompressionOptions(target_ratio=r) for r in ratios]  # checks every ratio before scoring
    count_tokens = resolve_token_counter(options[0].token_counter)
    critic_kept = np.zeros(len(ratios))
    bm25_kept = np.zeros(len(ratios))
    critical: list[float] = []  # per span, the highest threshold that still keeps it
    unit_chars: list[tuple[np.ndarray, np.ndarray]] = []  # per record, unit scores and lengths
    n_spans = 0
    for ex in examples:
        instruction = ex.instruction if ex.meta.get("own_instruction", True) else None
        [scored] = engine.score(
            ex.query, [ex.text], granularity=ex.granularity, instruction=instruction, coarse_filter="off"
        )
        original = count_tokens(ex.text)
        sentences = segment.sentence_spans(ex.text)
        lexical = bm25(ex.query, unit_documents(ex.text, sentences, segment.paragraph_spans(ex.text)))
        units, scores = _unit_scores(scored, ex.granularity)
        unit_chars.append((scores, units[:, 1] - units[:, 0]))
        n_spans += len(ex.keep)
        for span in ex.keep:
            critical.append(_critical_score(span, units, scores))
        for i, option in enumerate(options):
            [result] = engine.select([scored], option.merged(granularity=ex.granularity))
            kept = np.array([(s.start, s.end) for s in result.spans], dtype=np.int64).reshape(-1, 2)
            critic_kept[i] += sum(span_kept(span, kept) for span in ex.keep)
            [budget] = option.budgets([original])
            [selection] = select_under_budgets(
                [ex.text],
                [sentences],
                [_to_unit_interval(lexical)],
                [budget],
                [0],
                count_tokens,
                option.separator,
            )
            bm25_kept[i] += sum(span_kept(span, selection.spans) for span in ex.keep)
    return {
        "records": len(examples),
        "spans": n_spans,
        "ratios": [
            {
                "ratio": float(r),
                "critic": _share(critic_kept[i], n_spans),
                "bm25": _share(bm25_kept[i], n_spans),
            }
            for i, r in enumerate(ratios)
        ],
        "threshold": _threshold(critical, unit_chars, target_recall),
    }


def _share(kept: float, total: int) -> float | None:
    return None if total == 0 else round(float(kept) / total, 4)


def _unit_scores(scored: Any, granularity: str) -> tuple[np.ndarray, np.ndarray]:
    """The engine's units of a granularity and each one's keep probability (the critic alone)."""
    units = segment.units_for(granularity, scored.text, scored.offsets, CompressionOptions().chunk_tokens)
    if granularity != "token":
        units = glue_headings(scored.text, units)
    with np.errstate(over="ignore"):
        scores = 1.0 / (1.0 + np.exp(-unit_log_odds(units, scored.offsets, scored.probs)))
    return units, scores


def _critical_score(span: tuple[int, int], units: np.ndarray, scores: np.ndarray) -> float:
    """The highest ``score_threshold`` at which the units kept (those reaching it) still cover ``span``; -1 if no
    threshold does."""
    start, end = span
    overlap = np.clip(np.minimum(units[:, 1], end) - np.maximum(units[:, 0], start), 0, None)
    touching = np.flatnonzero(overlap > 0)
    covered = 0
    for u in touching[np.argsort(-scores[touching], kind="stable")]:
        covered += int(overlap[u])
        if covered >= MIN_COVERED * (end - start):
            return float(scores[u])
    return -1.0


def _threshold(
    critical: list[float], unit_chars: list[tuple[np.ndarray, np.ndarray]], target_recall: float
) -> dict[str, Any]:
    """The largest threshold keeping ``target_recall`` of the spans, its recall and the share of characters kept."""
    out: dict[str, Any] = {"target_recall": target_recall, "score_threshold": None, "recall": None, "kept_share": None}
    if not critical:
        return out
    ranked = sorted(critical, reverse=True)
    needed = max(1, math.ceil(target_recall * len(ranked) - 1e-9))
    value = ranked[needed - 1]
    if value < 0:  # no threshold reaches the target (spans that no unit covers)
        return out
    # round down so that the printed value keeps what it promises
    threshold = math.floor(value * 1000) / 1000
    kept_chars = sum(float(lengths[scores >= threshold].sum()) for scores, lengths in unit_chars)
    total_chars = sum(float(lengths.sum()) for _, lengths in unit_chars)
    out.update(
        score_threshold=threshold,
        recall=round(sum(c >= threshold for c in critical) / len(critical), 4),
        kept_share=round(kept_chars / max(1.0, total_chars), 4),
    )
    return out


def _to_unit_interval(scores: np.ndarray) -> np.ndarray:
    """Dense ranks scaled into (0, 1]: the order and ties of ``scores`` (the selection takes scores in [0, 1])."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    _, rank = np.unique(scores, return_inverse=True)
    return (rank + 1) / (rank.max() + 1)


def format_table(report: dict[str, Any], title: str = "") -> str:
    """A plain-text table of one report (or of ``{"before": ..., "after": ...}`` reports side by side)."""
    reports = report if "ratios" not in report else {"critic": report}
    names = list(reports)
    first = reports[names[0]]
    lines = [title] if title else []
    lines.append(f"{first['records']} records, {first['spans']} spans to keep (kept: >= {MIN_COVERED:.0%} of chars)")
    header = ["ratio", *(n if len(names) > 1 else "critic" for n in names), "bm25"]
    lines.append("  ".join(f"{h:>8}" for h in header))
    for i, row in enumerate(first["ratios"]):
        cells = [f"{row['ratio']:>8g}"]
        cells += [_cell(reports[n]["ratios"][i]["critic"]) for n in names]
        cells.append(_cell(row["bm25"]))
        lines.append("  ".join(cells))
    for n in names:
        t = reports[n]["threshold"]
        label = f"{n}: " if len(names) > 1 else ""
        if t["score_threshold"] is None:
            lines.append(f"{label}no score_threshold keeps {t['target_recall']:.0%} of the spans")
        else:
            lines.append(
                f"{label}score_threshold={t['score_threshold']:.3f} keeps {t['recall']:.1%} of the spans "
                f"(target {t['target_recall']:.0%}) and {t['kept_share']:.1%} of the text"
            )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{value:>8.3f}"
