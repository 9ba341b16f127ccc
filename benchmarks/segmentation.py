"""Share of unit segmentation in end-to-end compression time, at several lengths (default critic).

For each length: one ``engine.compress`` (sentence granularity, ratio 0.1) with its timings, and, on the same text,
the segmentation calls the engine makes (``paragraph_spans`` and ``sentence_spans`` for window cuts and units, on
ICU and markdown-it-py), timed alone. The text is the essays haystack (it holds Markdown links and numbered lines,
so the Markdown path runs too).

Usage:
    python -m benchmarks.segmentation                    # 128K and 1M o200k tokens
    python -m benchmarks.segmentation --lengths 131072
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, run_info, set_offline, set_threads, write_json


def run(lengths: list[int], threads: int | None) -> dict[str, Any]:
    from benchmarks.speed import speed_text
    from cprs_integrations import CPRSEngine
    from cprs_integrations.engine import segment

    set_offline()
    threads = set_threads(threads)
    engine = CPRSEngine.from_pretrained(max_input_tokens=20_000_000)
    rows = []
    for n_tokens in lengths:
        query, text = speed_text(n_tokens)
        started = time.perf_counter()
        segment.paragraph_spans(text)
        segment.sentence_spans(text)
        segmentation_s = time.perf_counter() - started
        started = time.perf_counter()
        [result] = engine.compress(query, [text], target_ratio=0.1, show_progress=False)
        total_s = time.perf_counter() - started
        # The engine segments twice: for window cuts (in tokenize_s) and for units (in select_s).
        rows.append(
            {
                "o200k_tokens": n_tokens,
                "critic_tokens": int(result.timings["critic_tokens"]),
                "chars": len(text),
                "segmentation_s": round(segmentation_s, 3),
                "end_to_end_s": round(total_s, 3),
                "segmentation_share": round(2 * segmentation_s / total_s, 4),
                "timings": {k: round(v, 3) for k, v in result.timings.items()},
            }
        )
    return {**run_info(threads), "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="131072,1048576", help="comma-separated o200k token counts")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "segmentation.json")
    args = parser.parse_args(argv)
    result = run([int(x) for x in args.lengths.split(",")], args.threads)
    machine = result["machine"]
    print(f"machine: {machine['cpu']}, {machine['torch_threads']} torch threads")
    for row in result["rows"]:
        print(
            f"{row['o200k_tokens']:>9,} o200k tokens ({row['chars']:,} chars): segmentation "
            f"{row['segmentation_s']:.2f} s (done twice per call), end to end {row['end_to_end_s']:.1f} s, "
            f"share {row['segmentation_share']:.2%}"
        )
    write_json(args.output, result)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
