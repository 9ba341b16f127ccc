"""How fully budgets are used: output tokens (separators included) / budget, per granularity and ratio.

Runs the engine as users do (``engine.compress`` options, default critic unless ``--model``) on the bundled sample
(about 8.4K o200k tokens of Wikipedia paragraphs) and on HotpotQA contexts (about 1.3K tokens each), scoring each
text once per granularity and selecting at every ratio (``engine.select``: the same code as ``compress``).
Also checks that ``target_ratio=1.0`` returns every text exactly, and counts empty results.

Usage:
    python -m benchmarks.budget_fill                 # default critic, sample + 50 HotpotQA contexts
    python -m benchmarks.budget_fill --hotpot 0      # sample only (about a minute on 2 CPU threads)
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, o200k, run_info, set_offline, set_threads, write_json

RATIOS = (0.05, 0.1, 0.2, 0.5, 0.9)
GRANULARITIES = ("token", "sentence", "paragraph", "chunk")


def _texts(hotpot: int) -> list[tuple[str, str]]:
    """(query, text) pairs: the bundled sample, then the first ``hotpot`` HotpotQA test contexts."""
    data = importlib.resources.files("cprs_integrations") / "data"
    facts = json.loads((data / "sample_wiki.json").read_text(encoding="utf-8"))
    pairs = [(facts["query"], (data / "sample_wiki.txt").read_text(encoding="utf-8"))]
    if hotpot:
        from benchmarks.tasks import hotpot_examples

        pairs += [(ex.query, ex.text) for ex in hotpot_examples(hotpot)]
    return pairs


def run(model: str | None, hotpot: int, threads: int | None) -> dict[str, Any]:
    from cprs_integrations import CPRSEngine

    set_offline()
    threads = set_threads(threads)
    engine = CPRSEngine.from_pretrained(model)
    count = o200k()
    pairs = _texts(hotpot)
    rows: list[dict[str, Any]] = []
    identity_ok = True
    started = time.perf_counter()
    for granularity in GRANULARITIES:
        fills: dict[float, list[float]] = {r: [] for r in RATIOS}
        empty: dict[float, int] = dict.fromkeys(RATIOS, 0)
        fallbacks: dict[float, int] = dict.fromkeys(RATIOS, 0)
        for query, text in pairs:
            scored = engine.score(query, [text], granularity=granularity)
            [whole] = engine.select(scored, granularity=granularity, target_ratio=1.0)
            identity_ok &= whole.text == text
            for ratio in RATIOS:
                [res] = engine.select(scored, granularity=granularity, target_ratio=ratio)
                budget = math.floor(ratio * count(text))
                if budget == 0:
                    continue
                fills[ratio].append(res.compressed_tokens / budget)
                empty[ratio] += not res.text
                fallbacks[ratio] += res.granularity_used != granularity
        for ratio in RATIOS:
            values = fills[ratio]
            rows.append(
                {
                    "granularity": granularity,
                    "target_ratio": ratio,
                    "texts": len(values),
                    "mean_fill": statistics.fmean(values),
                    "min_fill": min(values),
                    "empty": empty[ratio],
                    "finer_fallbacks": fallbacks[ratio],
                }
            )
    return {
        **run_info(threads),
        "model": model or "embedded default",
        "texts": len(pairs),
        "ratio_1_identity": identity_ok,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="critic folder (default: the embedded default)")
    parser.add_argument("--hotpot", type=int, default=50, help="HotpotQA contexts besides the sample (0: none)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "budget_fill.json")
    args = parser.parse_args(argv)
    result = run(args.model, args.hotpot, args.threads)
    machine = result["machine"]
    print(f"machine: {machine['cpu']}, {machine['torch_threads']} threads; texts: {result['texts']}")
    print(f"target_ratio=1.0 returns every text exactly: {result['ratio_1_identity']}")
    print(f"{'granularity':<12}{'ratio':>7}{'mean fill':>11}{'min fill':>10}{'empty':>7}{'finer':>7}")
    for row in result["rows"]:
        print(
            f"{row['granularity']:<12}{row['target_ratio']:>7}{row['mean_fill']:>11.3f}{row['min_fill']:>10.3f}"
            f"{row['empty']:>7}{row['finer_fallbacks']:>7}"
        )
    write_json(args.output, result)
    print(f"wrote {args.output}")
    return 0 if result["ratio_1_identity"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
