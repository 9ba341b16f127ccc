"""Speed benchmark: throughput and peak memory against context length, one fresh subprocess per point.

Each point (method, length) runs in its own process: load the method, build the text (essays with a needle at 50%
depth, the needle's question as the query), warm up on a 2K-token text, reset the peak-RSS mark, then compress once
at 10x. Reported: seconds, o200k tokens/s, model tokens/s (critic / MiniLM / SmolLM2 tokens), the peak RSS above
the baseline taken just before the call, and the text's own size (memory = peak extra + text).

``ours`` is the engine end to end (``compress``: tokenize, window, score, select); ``ours-raw-forward`` is the bare
forward pass of the same model over the same windows and batches (inputs prepared outside the timer), so the
engine's overhead is the gap between the two. A point whose estimated time (from the previous length) exceeds the
cap is recorded as ``skipped: too slow``.

Usage::

    .venv/bin/python -m benchmarks.speed           # 4K .. 1M tokens
    .venv/bin/python -m benchmarks.speed --quick   # 4K and 16K tokens, fewer methods, 30 s cap per point
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE_DIR,
    REPO,
    RESULTS_DIR,
    o200k,
    run_info,
    set_offline,
    set_threads,
    write_json,
)

LENGTHS = (4096, 8192, 32768, 131072, 1048576)
QUICK_LENGTHS = (4096, 16384)
METHODS = (
    "ours",
    "ours-raw-forward",
    "tiny-decoder",
    "tiny-decoder-raw-forward",
    "bm25",
    "random",
    "minilm-cosine",
    "langchain-embeddings-filter",
    "llamaindex-sentence-optimizer",
    "rag",
    "longllmlingua",
    "longllmlingua-coarse",
)
#: What ``--quick`` measures: one method per cost profile (the framework filters cost what MiniLM cosine costs;
#: LongLLMLingua's token level is too slow for a quick run, its coarse ranking stands in as a lower bound).
QUICK_METHODS = ("ours", "ours-raw-forward", "tiny-decoder", "bm25", "minilm-cosine", "rag", "longllmlingua-coarse")
#: Shortest context a method is measured at (the tiny decoder's window alone is 8K tokens).
MIN_TOKENS = {"tiny-decoder": 8192, "tiny-decoder-raw-forward": 8192}
WARMUP_TOKENS = 2048
RATIO = 10


# ------------------------------------------------------------------------------------------ memory readings


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs``); ``False`` where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    """Resident memory now, in MiB."""
    kb = _status_kb("VmRSS")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset (or since start), in MiB."""
    kb = _status_kb("VmHWM")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


# ------------------------------------------------------------------------------------------------- workloads


def speed_text(n_tokens: int, seed: int = 0) -> tuple[str, str]:
    """Essays of ``n_tokens`` o200k tokens with one needle at 50% depth; returns (query, text)."""
    from benchmarks.tasks import essay_of_tokens
    from cprs_integrations.training.synthetic import needle_example

    rng = random.Random(seed + n_tokens)
    made = needle_example(rng, essay_of_tokens(rng, n_tokens), kind="single", value_type="numbers", depths=[0.5])
    return made.query, made.text


def ours_runner(model: str | None) -> tuple[Callable[[str, str], int], Any]:
    """Engine end to end; returns (run(query, text) -> critic tokens, engine)."""
    from cprs_integrations.engine.engine import CPRSEngine

    engine = CPRSEngine.from_pretrained(model, max_input_tokens=4_000_000)

    def run(query: str, text: str) -> int:
        [result] = engine.compress(query, [text], granularity="sentence", target_ratio=1 / RATIO, show_progress=False)
        return int(result.timings["critic_tokens"])

    return run, engine


def raw_forward_runner(model: str | None) -> Callable[[str, str], Callable[[], int]]:
    """The bare forward pass over the engine's windows: prepare(query, text) -> timed callable -> critic tokens."""
    import numpy as np
    import torch

    from cprs_integrations.engine.prompts import instruction_for
    from cprs_integrations.engine.segment import paragraph_spans, sentence_spans
    from cprs_integrations.engine.windows import boundary_token_starts, cut_windows, tokenize_with_offsets
    from cprs_integrations.models.base import pad_batch

    _, engine = ours_runner(model)
    critic = engine.critic

    def prepare(query: str, text: str) -> Callable[[], int]:
        [tok] = tokenize_with_offsets(critic.tokenizer, [text])
        layout = critic.prompt_layout(instruction_for("sentence"), query, max_prefix_tokens=engine.window_tokens // 2)
        windows = cut_windows(
            len(tok),
            engine.window_tokens - layout.overhead,
            boundary_token_starts(tok.offsets, paragraph_spans(text)[:, 0]),
            boundary_token_starts(tok.offsets, sentence_spans(text)[:, 0]),
        ).tolist()
        windows.sort(key=lambda w: w[1] - w[0], reverse=True)
        batches = [windows[i : i + engine.batch_size] for i in range(0, len(windows), engine.batch_size)]
        calls: list[Callable[[], Any]] = []
        for batch in batches:
            ids = [tok.ids[s:e] for s, e in batch]
            if critic.kind == "encoder":
                inputs = critic.batch_tensors(layout, ids)
                calls.append(lambda inputs=inputs: critic.model(**inputs).logits)
            else:
                pad = critic.tokenizer.pad_token_id
                pad = critic.tokenizer.eos_token_id if pad is None else pad
                sequences = [[*layout.head, *np.asarray(w).tolist(), *layout.tail] for w in ids]
                padded, mask = (torch.from_numpy(a) for a in pad_batch(sequences, pad))
                calls.append(lambda padded=padded, mask=mask: critic.model(padded, mask))

        def forward() -> int:
            with torch.inference_mode():
                for call in calls:
                    call()
            return len(tok)

        return forward

    return prepare


def method_runner(name: str) -> Callable[[str, str], None]:
    """A quality-benchmark method (segmentation included in the timed call), compressing at 10x."""
    from benchmarks.methods import BM25Sentences, MiniLMCosine, RandomSentences
    from benchmarks.tasks import plain_example

    if name == "bm25":
        method: Any = BM25Sentences()
    elif name == "random":
        method = RandomSentences()
    elif name == "minilm-cosine":
        method = MiniLMCosine()
    elif name.startswith("longllmlingua"):
        from benchmarks.llmlingua_peer import LongLLMLingua

        method = LongLLMLingua(token_level=name == "longllmlingua")
    else:
        from benchmarks.peers import peer_factories

        method = peer_factories()[name]()

    def run(query: str, text: str) -> None:
        example = plain_example("speed", "speed", query, text)
        method.run(example, {f"{RATIO}x": o200k()(text) // RATIO})

    return run


def model_tokens(name: str, text: str, model: str | None) -> int | None:
    """Tokens of ``text`` in the method's own model (MiniLM for embedding peers, SmolLM2 for LongLLMLingua)."""
    from transformers import AutoTokenizer

    from cprs_integrations.models.testing import minilm_dir

    if name in ("minilm-cosine", "langchain-embeddings-filter", "llamaindex-sentence-optimizer", "rag"):
        folder = str(minilm_dir())
    elif name.startswith("longllmlingua"):
        from benchmarks.common import smollm2_dir

        folder = str(smollm2_dir())
    else:
        return None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def tiny_decoder_dir() -> str:
    """A tiny random Qwen2 critic (4 layers, hidden 32) saved once under the cache."""
    from cprs_integrations.models.testing import qwen_tokenizer_dir, save_tiny_decoder_critic

    folder = CACHE_DIR / "tiny-decoder-critic"
    if not (folder / "model.safetensors").is_file():
        save_tiny_decoder_critic(folder, qwen_tokenizer_dir())
    return str(folder)


def measure_point(name: str, n_tokens: int, model: str | None) -> dict[str, Any]:
    """One point, in this process: load, build text, warm up, reset the peak mark, time one call."""
    load_started = time.perf_counter()
    critic_model = tiny_decoder_dir() if name.startswith("tiny-decoder") else model
    if name in ("ours", "tiny-decoder"):
        ours, _ = ours_runner(critic_model)

        def prepare(query: str, text: str) -> Callable[[], int | None]:
            return lambda: ours(query, text)

    elif name.endswith("raw-forward"):
        prepare = raw_forward_runner(critic_model)
    else:
        runner = method_runner(name)

        def prepare(query: str, text: str) -> Callable[[], int | None]:
            return lambda: runner(query, text)

    load_seconds = time.perf_counter() - load_started
    model_rss = current_rss_mb()
    warm_query, warm_text = speed_text(WARMUP_TOKENS, seed=1)
    prepare(warm_query, warm_text)()
    query, text = speed_text(n_tokens)
    call = prepare(query, text)
    own_tokens = model_tokens(name, text, model)
    gc.collect()
    resettable = reset_peak_rss()
    baseline = current_rss_mb()
    started = time.perf_counter()
    counted = call()
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    tokens = o200k()(text)
    critic_tokens = counted if isinstance(counted, int) else own_tokens
    text_mb = len(text.encode("utf-8")) / 2**20
    return {
        "method": name,
        "tokens": n_tokens,
        "o200k_tokens": tokens,
        "model_tokens": critic_tokens,
        "seconds": round(seconds, 3),
        "o200k_tokens_per_s": round(tokens / seconds, 1),
        "model_tokens_per_s": round(critic_tokens / seconds, 1) if critic_tokens else None,
        "load_seconds": round(load_seconds, 2),
        "model_rss_mb": round(model_rss, 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_extra_mb": round(max(0.0, peak - baseline), 1),
        "text_mb": round(text_mb, 2),
        "memory_mb": round(max(0.0, peak - baseline) + text_mb, 1),
        "peak_reset": resettable,
    }


# ---------------------------------------------------------------------------------------------------- driver


def run_point(name: str, n_tokens: int, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """Run one point in a fresh subprocess; its last stdout line is the JSON result."""
    command = [sys.executable, "-m", "benchmarks.speed", "--worker", name, str(n_tokens)]
    if args.model:
        command += ["--model", args.model]
    if args.threads:
        command += ["--threads", str(args.threads)]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {"method": name, "tokens": n_tokens, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"method": name, "tokens": n_tokens, "error": f"exit {done.returncode}: {' | '.join(tail)[-400:]}"}
    return json.loads(lines[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4K and 16K tokens, fewer methods, 30 s cap per point")
    parser.add_argument("--model", default=None, help="critic folder (default: the embedded default critic)")
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: all; --quick: a few)")
    parser.add_argument("--lengths", default=None, help="comma-separated context lengths in o200k tokens")
    parser.add_argument("--cap", type=float, default=None, help="skip points estimated above this many seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="output JSON (default: results/speed[-quick].json)")
    parser.add_argument(
        "--extend",
        action="store_true",
        help="add these points to an existing --out file (same machine and threads; re-measured points replace theirs)",
    )
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "TOKENS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    set_offline()
    threads = set_threads(args.threads)
    if args.worker:
        name, n_tokens = args.worker
        print(json.dumps(measure_point(name, int(n_tokens), args.model)), flush=True)
        return None
    lengths = (
        [int(x) for x in args.lengths.split(",")] if args.lengths else list(QUICK_LENGTHS if args.quick else LENGTHS)
    )
    cap = args.cap or (30.0 if args.quick else 600.0)
    out_path = args.out or RESULTS_DIR / ("speed-quick.json" if args.quick else "speed.json")
    result: dict[str, Any] = {
        "benchmark": "speed",
        "quick": args.quick,
        **run_info(threads),
        "model": args.model or "default",
        "ratio": f"{RATIO}x",
        "cap_seconds": cap,
        "lengths": lengths,
        "points": [],
    }
    if args.extend:
        check_extendable(out_path, result)
    started = time.perf_counter()
    names = args.methods.split(",") if args.methods else list(QUICK_METHODS if args.quick else METHODS)
    for name in names:
        if name not in METHODS:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        timed: dict[str, Any] | None = None  # the last point that ran
        failed = False
        for n_tokens in [n for n in lengths if n >= MIN_TOKENS.get(name, 0)]:
            point: dict[str, Any]
            estimate = timed["seconds"] * n_tokens / timed["tokens"] if timed else 0.0
            if failed:
                point = {"method": name, "tokens": n_tokens, "skipped": "a shorter context failed"}
            elif estimate > cap:
                point = {"method": name, "tokens": n_tokens, "skipped": f"too slow (about {estimate:.0f} s)"}
            else:
                point = run_point(name, n_tokens, args, timeout=max(3 * cap, 180))
                failed = "error" in point
                timed = None if failed else point
            shown = point.get("error") or point.get("skipped") or f"{point['seconds']} s, {point['memory_mb']} MB"
            print(f"{name} {n_tokens}: {shown}", file=sys.stderr, flush=True)
            result["points"].append(point)
            _write(out_path, result, started, args.extend)
    _write(out_path, result, started, args.extend)
    return result


def check_extendable(path: Path, fresh: dict[str, Any]) -> None:
    """``SystemExit`` unless ``path`` holds a speed run on the same machine, threads, ratio and model as ``fresh``."""
    if not path.exists():
        raise SystemExit(f"--extend: {path} does not exist; run without --extend first")
    base = json.loads(path.read_text(encoding="utf-8"))
    for key in ("machine", "ratio", "model"):
        if base.get(key) != fresh.get(key):
            raise SystemExit(f"--extend: {key} differs from {path} ({base.get(key)!r} vs {fresh.get(key)!r})")


def _write(path: Path, result: dict[str, Any], started: float, extend: bool) -> None:
    seconds = round(time.perf_counter() - started, 1)
    if not extend:
        write_json(path, {**result, "wall_seconds": seconds})
        return
    # Read, merge and write under a lock, so that several --extend runs (one per core) can share one file.
    lock_path = (
        Path(tempfile.gettempdir()) / f"cprs-speed-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()}.lock"
    )
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = json.loads(path.read_text(encoding="utf-8"))
        runs = base.get("runs") or [{k: base.get(k) for k in ("command", "date", "lengths", "wall_seconds")}]
        this_run = {
            **{k: result[k] for k in ("command", "date", "lengths")},
            "pid": os.getpid(),
            "wall_seconds": seconds,
        }
        runs = [r for r in runs if (r.get("date"), r.get("pid")) != (this_run["date"], this_run["pid"])] + [this_run]
        new = {(p["method"], p["tokens"]) for p in result["points"]}
        points = [p for p in base["points"] if (p["method"], p["tokens"]) not in new] + result["points"]
        write_json(
            path,
            {
                **base,
                "runs": runs,
                "lengths": sorted(set(base.get("lengths", [])) | set(result["lengths"])),
                "points": points,
                "wall_seconds": round(sum(r.get("wall_seconds") or 0 for r in runs), 1),
            },
        )


if __name__ == "__main__":
    main()
