"""Choose the engine's ``lexical_weight`` on the HotpotQA **dev** split (buckets 85-89), never on the test split.

For each weight, units are ranked by ``z(critic sentence logit) + weight x z(BM25)`` exactly as in
:mod:`cprs_integrations.engine.lexical`, and supporting-fact recall is measured at 5x and 10x. The critic scores
each question once; the weights only re-rank.

Usage::

    .venv/bin/python -m benchmarks.tune_fusion [--model PATH] [--weights 0,0.25,0.5,0.75,1,1.5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, o200k, run_info, set_offline, set_threads, write_json
from benchmarks.methods import fill, spans_output
from benchmarks.metrics import example_metrics
from benchmarks.ours import EngineScores, sentence_log_odds
from benchmarks.tasks import hotpot_bench_example
from cprs_integrations.engine.lexical import bm25, zscore
from cprs_integrations.training.data import hotpot_records

RATIOS = {"5x": 5, "10x": 10}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="critic folder (default: the embedded default critic)")
    parser.add_argument("--weights", default="0,0.25,0.5,0.75,1,1.5", help="comma-separated lexical weights")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "fusion_dev.json")
    args = parser.parse_args(argv)
    set_offline()
    set_threads(args.threads)
    from cprs_integrations.engine.engine import CPRSEngine

    weights = [float(w) for w in args.weights.split(",")]
    engine = CPRSEngine.from_pretrained(args.model)
    scores = EngineScores(engine)
    count = o200k()
    recall: dict[float, dict[str, list[float]]] = {w: {label: [] for label in RATIOS} for w in weights}
    started = time.time()
    examples = [e for e in (hotpot_bench_example(r) for r in hotpot_records("dev")) if e is not None]
    for example in examples:
        critic = zscore(sentence_log_odds(example, scores.get(example, "sentence")))
        lexical = zscore(bm25(example.query, example.unit_texts(with_titles=True)))
        original = count(example.text)
        for weight in weights:
            for label, ratio in RATIOS.items():
                spans = fill(example, critic + weight * lexical, int(original // ratio))
                recall[weight][label].append(example_metrics(example, spans_output(example.text, spans))["sf_recall"])
    table = {
        f"{w:g}": {label: round(float(np.mean(values)), 4) for label, values in per.items()}
        for w, per in recall.items()
    }
    for weight, row in table.items():
        print(f"lexical_weight {weight:>5}: " + "  ".join(f"SF recall @{k} {v:.4f}" for k, v in row.items()))
    write_json(
        args.out,
        {
            **run_info(args.threads),
            "critic": args.model or "default",
            "split": "hotpotqa dev (sha256(_id) buckets 85-89)",
            "n_examples": len(examples),
            "seconds": round(time.time() - started, 1),
            "sf_recall": table,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
