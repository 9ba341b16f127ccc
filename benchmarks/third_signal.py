"""Would a sentence-embedding cosine as a third fused signal close the paraphrase gap? Dev sets only.

Ranks each dev example's sentences by ``z(critic) + 0.5 z(BM25) + w z(cosine)`` for the shipped static model and
for full MiniLM, at the paraphrase set's two-sentence budget and HotpotQA dev at 10x (the critic scores once).

Usage::

    .venv/bin/python -m benchmarks.third_signal [CRITIC_FOLDER]   # -> benchmarks/results/stage4/third_signal_*.json
"""

from __future__ import annotations

import json
import sys

import numpy as np

from benchmarks.common import RESULTS_DIR, o200k, set_offline, set_threads
from benchmarks.critic_dev import hotpot_dev, kept_share, paraphrase_dev
from benchmarks.methods import bm25_scores, cosine_scores, fill, spans_output
from benchmarks.metrics import example_metrics
from benchmarks.ours import EngineScores, sentence_log_odds
from benchmarks.tasks import BenchExample

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5)


def measure(scores: EngineScores, embed, task: str, examples: list[BenchExample]) -> dict[str, float]:
    from cprs_integrations.engine.lexical import zscore

    recall: dict[str, list[float]] = {f"{name} {w}": [] for name in ("static", "minilm") for w in WEIGHTS}
    for example in examples:
        critic = zscore(sentence_log_odds(example, scores.get(example, "sentence")))
        texts = example.unit_texts(with_titles=task == "hotpot")
        lexical = zscore(bm25_scores(example.query, texts))
        signals = {
            "static": zscore(embed(texts) @ embed([example.query])[0]),
            "minilm": zscore(cosine_scores(example.query, texts)),
        }
        budget = example.meta["budget"] if task == "paraphrase" else int(o200k()(example.text) // 10)
        for name, signal in signals.items():
            for w in WEIGHTS:
                output = spans_output(example.text, fill(example, critic + 0.5 * lexical + w * signal, budget))
                kept = kept_share(example, output) if task == "paraphrase" else example_metrics(example, output)
                recall[f"{name} {w}"].append(kept if task == "paraphrase" else kept["sf_recall"])
    return {k: round(float(np.mean(v)), 4) for k, v in recall.items()}


def main() -> None:
    set_offline()
    set_threads(2)
    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.models.static_embedding import default_embedder

    model = sys.argv[1] if len(sys.argv) > 1 else None
    scores = EngineScores(CPRSEngine.from_pretrained(model))
    out: dict[str, object] = {"critic": model or "default"}
    for task, examples in (("paraphrase", paraphrase_dev(100)), ("hotpot", hotpot_dev(None))):
        out[task] = measure(scores, default_embedder(), task, examples)
        print(task, out[task], flush=True)
    name = "candidate" if model else "shipped"
    path = RESULTS_DIR / "stage4" / f"third_signal_dev_{name}.json"
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
