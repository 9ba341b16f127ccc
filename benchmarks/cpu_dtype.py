"""bf16 against fp32 for the embedded critic on this CPU: what ``dtype="auto"`` should choose here.

One process, both engines loaded, calls interleaved (fp32, bf16, fp32, ...), best of ``--repeats`` each:
``compress`` of one essay (``--chars`` characters of the bundled Paul Graham essays) at 10x. Prints the seconds,
``bf16 speedup`` (fp32 seconds / bf16 seconds: above 1 means bf16 is faster) and what ``dtype="auto"`` chooses
(``models.devices.bf16_is_fast``); the JSON file adds the machine (CPU model and flags).

    python -m benchmarks.cpu_dtype                  # -> benchmarks/results/cpu_dtype.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, run_info, set_offline, set_threads, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=120_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "cpu_dtype.json")
    args = parser.parse_args(argv)
    set_offline()
    threads = set_threads(args.threads)
    from cprs_integrations import CPRSEngine
    from cprs_integrations.models.devices import resolve_dtype
    from cprs_integrations.training.data import essay_text

    query, text = "What did the author work on?", essay_text()[: args.chars]
    engines = {d: CPRSEngine.from_pretrained(dtype=d) for d in ("float32", "bfloat16")}
    for engine in engines.values():  # warm-up
        engine.compress(query, [text[:5000]], target_ratio=0.1, show_progress=False)
    best = dict.fromkeys(engines, float("inf"))
    for _ in range(args.repeats):
        for name, engine in engines.items():
            started = time.perf_counter()
            engine.compress(query, [text], target_ratio=0.1, show_progress=False)
            best[name] = min(best[name], time.perf_counter() - started)
    result = {
        "run": run_info(threads),
        "chars": len(text),
        "seconds": {name: round(s, 2) for name, s in best.items()},
        "bf16_speedup": round(best["float32"] / best["bfloat16"], 2),
        "auto_chooses": str(resolve_dtype("auto", "cpu")).removeprefix("torch."),
    }
    print(result["seconds"], "bf16 speedup", result["bf16_speedup"], "auto ->", result["auto_chooses"])
    write_json(args.out, result)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
