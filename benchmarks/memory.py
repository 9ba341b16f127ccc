"""Peak memory of ``engine.compress`` beyond the text, at 1M and 10M critic tokens (one fresh process per point).

Critics: ``none`` (the embedded critic's tokenizer and engine, with a forward that returns constant probabilities:
the engine's own memory, nothing else), ``tiny`` (the random 2-layer encoder of the tests: a real forward at small
cost), ``default`` (the embedded MiniLM critic). Budget mode, sentence granularity, ratio 0.1, the essays haystack.
Peak RSS is read from the kernel (``VmHWM``, reset before the call); the text's own size is reported beside it.

Usage:
    python -m benchmarks.memory                                  # none at 1M and 10M, tiny at 1M, default at 1M
    python -m benchmarks.memory --points none:10485760
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, run_info, set_offline, write_json

DEFAULT_POINTS = ("none:1048576", "none:10485760", "tiny:1048576", "default:1048576")


def _engine(critic: str) -> Any:
    import numpy as np

    from cprs_integrations import CPRSEngine

    if critic == "tiny":
        from cprs_integrations.models.testing import save_tiny_encoder_critic

        folder = Path(tempfile.mkdtemp()) / "tiny"
        save_tiny_encoder_critic(folder)
        return CPRSEngine.from_pretrained(folder, device="cpu", dtype="float32", max_input_tokens=20_000_000)
    engine = CPRSEngine.from_pretrained(max_input_tokens=20_000_000)
    if critic == "none":

        def constant(layout: Any, windows: list[Any]) -> list[Any]:
            return [np.full((len(w), 4), 0.25, np.float32) for w in windows]

        for worker in engine.scheduler.workers:
            worker.score_windows = constant  # type: ignore[method-assign]
    return engine


def measure(critic: str, n_tokens: int) -> dict[str, Any]:
    """One point in this process."""
    from benchmarks.speed import current_rss_mb, peak_rss_mb, reset_peak_rss, speed_text

    set_offline()
    engine = _engine(critic)
    query, text = speed_text(n_tokens)
    gc.collect()
    reset_peak_rss()
    baseline = current_rss_mb()
    started = time.perf_counter()
    [result] = engine.compress(query, [text], target_ratio=0.1, show_progress=False)
    seconds = time.perf_counter() - started
    return {
        "critic": critic,
        "o200k_tokens": n_tokens,
        "critic_tokens": int(result.timings["critic_tokens"]),
        "text_mb": round(len(text.encode("utf-8")) / 2**20, 1),
        "peak_beyond_text_mb": round(peak_rss_mb() - baseline, 1),
        "seconds": round(seconds, 1),
        "timings": {k: round(v, 2) for k, v in result.timings.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default=",".join(DEFAULT_POINTS), help="critic:o200k_tokens, comma-separated")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "memory.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        critic, tokens = args.worker.split(":")
        print(json.dumps(measure(critic, int(tokens))), flush=True)
        return 0
    rows = []
    for point in args.points.split(","):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--worker", point], capture_output=True, text=True, timeout=3600
        )
        if done.returncode != 0:
            rows.append({"point": point, "error": done.stderr.strip().splitlines()[-1:]})
            print(f"{point}: failed: {rows[-1]['error']}", flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{row['critic']:>8} {row['critic_tokens']:>11,} critic tokens ({row['text_mb']:,.0f} MB of text): "
            f"+{row['peak_beyond_text_mb']:,.0f} MB peak beyond the text, {row['seconds']} s",
            flush=True,
        )
    write_json(args.output, {**run_info(), "rows": rows})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
