"""What survived compression: kept tests per example, and their means per method and budget.

* A gold span (supporting fact, chain statement) is kept when at least 90% of its characters lie inside kept spans
  (``MIN_COVERED`` and ``covered_share`` of ``cprs_integrations.training.evaluate``, which ``cprs eval`` uses too);
  for a text-only output (LongLLMLingua) when its whitespace-normalised text appears in the normalised output.
* A gold string (needle value, answer) is kept when it appears in the kept text (whitespace-normalised).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.tasks import BenchExample
from cprs_integrations.training.evaluate import MIN_COVERED, covered_share

#: The metrics of each task; the first one is the headline of its plot and table.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "hotpotqa": ("sf_recall", "all_facts_kept"),
    "needle": ("needle_kept",),
    "multikey": ("all_values_kept",),
    "variable_tracking": ("chain_kept", "statement_recall"),
    "squad": ("answer_kept",),
}
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Output:
    """What a method kept for one example at one budget.

    Attributes:
        text: The compressed text (kept slices joined by the separator, or a peer's own output).
        spans: ``(k, 2)`` kept char spans of the input, or ``None`` for a text-only output.
        tokens: o200k tokens of ``text``.
        truncated: The method's own output was over the budget and was cut to it.
    """

    text: str
    spans: np.ndarray | None
    tokens: int
    truncated: bool = False


def normalise(text: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped."""
    return _WHITESPACE.sub(" ", text).strip()


def span_kept(example: BenchExample, output: Output, span: tuple[int, int], normalised: str | None = None) -> bool:
    """Whether a gold span survived (coverage test for span outputs, text test for text-only outputs)."""
    if output.spans is not None:
        return covered_share(span, output.spans) >= MIN_COVERED
    haystack = normalised if normalised is not None else normalise(output.text)
    return normalise(example.text[span[0] : span[1]]) in haystack


def example_metrics(example: BenchExample, output: Output) -> dict[str, float]:
    """The task's metrics for one example and one output, each in [0, 1]."""
    kept_text = normalise(output.text)
    strings = [normalise(s) in kept_text for s in example.gold_strings]
    spans = [span_kept(example, output, span, kept_text) for span in example.gold_spans]
    task = example.task
    if task == "hotpotqa":
        return {"sf_recall": float(np.mean(spans)), "all_facts_kept": float(all(spans))}
    if task == "needle":
        return {"needle_kept": float(all(strings))}
    if task == "multikey":
        return {"all_values_kept": float(all(strings))}
    if task == "variable_tracking":
        return {"chain_kept": float(all(spans)), "statement_recall": float(np.mean(spans))}
    if task == "squad":
        return {"answer_kept": float(any(strings))}
    raise ValueError(f"no metrics for task {task!r}")


def aggregate(records: Sequence[dict[str, Any]], metric_names: Sequence[str]) -> dict[str, Any]:
    """Means over the per-example records of one method and budget.

    Each record holds ``metrics``, ``tokens`` (kept), ``original``, ``budget`` (``None`` in tag mode) and
    ``truncated``.

    Returns:
        ``metrics`` (mean of each), ``kept_share`` (mean kept / original tokens), ``achieved_ratio`` (total
        original / total kept tokens), ``over_budget`` (share of examples above their budget), ``truncated`` (share
        of outputs cut to the budget) and ``n``.
    """
    if not records:
        return {"n": 0}
    kept = sum(r["tokens"] for r in records)
    original = sum(r["original"] for r in records)
    budgeted = [r for r in records if r["budget"] is not None]
    return {
        "metrics": {m: round(float(np.mean([r["metrics"][m] for r in records])), 4) for m in metric_names},
        "kept_share": round(float(np.mean([r["tokens"] / max(1, r["original"]) for r in records])), 4),
        "achieved_ratio": round(original / kept, 2) if kept else None,
        "over_budget": round(float(np.mean([r["tokens"] > r["budget"] for r in budgeted])), 4) if budgeted else None,
        "truncated": round(float(np.mean([bool(r.get("truncated")) for r in records])), 4),
        "n": len(records),
    }
