"""Quality benchmark: tasks x methods x budgets in one run, on held-out data only.

Budgets are shares of each context's o200k tokens (2x keeps at most half, ..., 50x a fiftieth); every method is
held to the same budget and the same counter. Results go to ``benchmarks/results/quality.json`` (``--quick``:
``quality-quick.json``), per-example records to ``raw/`` next to it (gitignored).

Usage::

    .venv/bin/python -m benchmarks.quality            # full run
    .venv/bin/python -m benchmarks.quality --quick    # small samples, < 10 minutes on a 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, o200k, run_info, set_offline, set_threads, short_error, write_json
from benchmarks.methods import BM25Sentences, Method, MiniLMCosine, RandomSentences
from benchmarks.metrics import TASK_METRICS, aggregate, example_metrics
from benchmarks.tasks import TASKS, BenchExample, build_examples

BUDGETS: dict[str, float] = {"2x": 2, "5x": 5, "10x": 10, "20x": 20, "50x": 50}
#: Budgets of each task (50x for the needle tasks).
TASK_BUDGETS: dict[str, tuple[str, ...]] = {
    "hotpotqa": ("2x", "5x", "10x", "20x"),
    "needle": ("2x", "5x", "10x", "20x", "50x"),
    "multikey": ("2x", "5x", "10x", "20x", "50x"),
    "variable_tracking": ("2x", "5x", "10x", "20x", "50x"),
    "squad": ("2x", "5x", "10x", "20x"),
}
FULL: dict[str, Any] = {
    "hotpot_n": 735,
    "needle_lengths": [4096, 16384, 65536, 131072],
    "needle_depths": [0.0, 0.25, 0.5, 0.75, 1.0],
    "needle_repeats": 1,
    "synthetic_n": 100,
    "squad_n": 200,
    "context_tokens": 8192,
    # LongLLMLingua costs about 40 CPU-seconds per 1K tokens here (all budgets): a documented subsample.
    "llmlingua_n": {"hotpotqa": 40, "needle": 5, "multikey": 5, "variable_tracking": 5, "squad": 8},
}
QUICK: dict[str, Any] = {
    "hotpot_n": 20,
    "needle_lengths": [4096, 16384],
    "needle_depths": [0.0, 0.5, 1.0],
    "needle_repeats": 1,
    "synthetic_n": 3,
    "squad_n": 3,
    "context_tokens": 8192,
    "llmlingua_n": {"hotpotqa": 2, "needle": 0, "multikey": 0, "variable_tracking": 0, "squad": 0},
}
METHOD_ORDER = (
    "ours",
    "ours-sentence",
    "ours-paragraph",
    "ours-chunk",
    "ours-tags",
    "ours+bm25",
    "bm25",
    "minilm-cosine",
    "langchain-embeddings-filter",
    "llamaindex-sentence-optimizer",
    "rag",
    "longllmlingua",
    "longllmlingua-coarse",
    "random",
)


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_methods(args: argparse.Namespace, config: dict[str, Any]) -> tuple[list[Method], dict[str, str]]:
    """The requested methods; those that cannot be built are returned as ``name -> error``."""
    wanted = set(args.methods.split(",")) if args.methods else set(METHOD_ORDER)
    unknown = wanted - set(METHOD_ORDER)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHOD_ORDER)}")
    methods: list[Method] = []
    errors: dict[str, str] = {}

    def attempt(names: tuple[str, ...], make: Callable[[], list[Method]]) -> None:
        if not wanted.intersection(names):
            return
        try:
            methods.extend(m for m in make() if m.name in wanted)
        except Exception as e:  # a peer that cannot run offline is recorded, not fatal
            for name in wanted.intersection(names):
                errors[name] = short_error(e)
            log(f"cannot build {', '.join(sorted(wanted.intersection(names)))}: {short_error(e)}")

    attempt(("ours", "ours-sentence", "ours-paragraph", "ours-chunk", "ours-tags", "ours+bm25"), lambda: _ours(args))
    attempt(("random",), lambda: [RandomSentences()])
    attempt(("bm25",), lambda: [BM25Sentences()])
    attempt(("minilm-cosine",), lambda: [MiniLMCosine()])
    for name in ("langchain-embeddings-filter", "llamaindex-sentence-optimizer", "rag"):
        attempt((name,), lambda name=name: [_peer(name)])
    attempt(("longllmlingua", "longllmlingua-coarse"), lambda: _llmlingua(config))
    methods.sort(key=lambda m: METHOD_ORDER.index(m.name))
    return methods, errors


def _ours(args: argparse.Namespace) -> list[Method]:
    from benchmarks.ours import engine_methods
    from cprs_integrations.engine.engine import CPRSEngine

    engine = CPRSEngine.from_pretrained(args.model)
    name = args.model or "default (cprs_integrations/models/default)"
    return engine_methods(engine, str(name), args.fusion_weight)


def _peer(name: str) -> Method:
    from benchmarks.peers import peer_factories

    return peer_factories()[name]()


def _llmlingua(config: dict[str, Any]) -> list[Method]:
    from benchmarks.llmlingua_peer import LongLLMLingua

    limits = dict(config["llmlingua_n"])
    return [LongLLMLingua(token_level=True, limits=limits), LongLLMLingua(token_level=False, limits=limits)]


def limit_of(method: Method, task: str) -> int | None:
    """How many examples of ``task`` the method sees (``None``: all)."""
    return method.limits.get(task) if method.limits else None


def run_task(
    task: str, examples: list[BenchExample], methods: list[Method], raw: Any
) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, dict[str, Any]]]:
    """Run every method on every example of a task; per method: records by budget label, and timing/errors."""
    count = o200k()
    records: dict[str, dict[str, list[dict[str, Any]]]] = {m.name: defaultdict(list) for m in methods}
    status: dict[str, dict[str, Any]] = {m.name: {"seconds": 0.0, "examples": 0, "o200k_tokens": 0} for m in methods}
    started = time.perf_counter()
    for index, example in enumerate(examples):
        original = count(example.text)
        budgets = {label: int(original // BUDGETS[label]) for label in TASK_BUDGETS[task]}
        for method in methods:
            state = status[method.name]
            limit = limit_of(method, task)
            if "error" in state or (limit is not None and index >= limit):
                continue
            began = time.perf_counter()
            try:
                outputs = method.run(example, budgets)
            except Exception as e:
                state["error"] = f"example {example.id}: {short_error(e)}"
                log(f"{task}/{method.name} failed: {state['error']}")
                continue
            seconds = time.perf_counter() - began
            state["seconds"] += seconds
            state["examples"] += 1
            state["o200k_tokens"] += original
            for label, output in outputs.items():
                record = {
                    "index": index,
                    "metrics": example_metrics(example, output),
                    "tokens": output.tokens,
                    "original": original,
                    "budget": budgets.get(label),
                    "truncated": output.truncated,
                    "meta": {k: v for k, v in example.meta.items() if k in ("length", "depth")},
                }
                records[method.name][label].append(record)
                where = {"task": task, "method": method.name, "label": label, "id": example.id}
                raw.write(json.dumps({**where, "seconds": round(seconds, 4), **record}) + "\n")
        if (index + 1) % 10 == 0 or index + 1 == len(examples):
            log(f"{task}: {index + 1}/{len(examples)} examples, {time.perf_counter() - started:.0f} s")
    return records, status


def summarise_task(
    task: str,
    examples: list[BenchExample],
    methods: list[Method],
    records: dict[str, dict[str, list[dict[str, Any]]]],
    status: dict[str, dict[str, Any]],
    config: dict[str, Any],
) -> dict[str, Any]:
    """The JSON of one task: per method and budget the aggregated metrics, plus a same-subsample comparison."""
    names = TASK_METRICS[task]
    out: dict[str, Any] = {
        "n_examples": len(examples),
        "metrics": list(names),
        "primary_metric": names[0],
        "budgets": list(TASK_BUDGETS[task]),
        "mean_original_tokens": round(sum(o200k()(e.text) for e in examples) / max(1, len(examples)), 1),
        "methods": {},
    }
    for method in methods:
        state = status[method.name]
        entry: dict[str, Any] = {**method.describe(), "n_examples": state["examples"]}
        if "error" in state:
            entry["error"] = state["error"]
        elif limit_of(method, task) == 0:
            entry["skipped"] = "not run on this task in this configuration (slow)"
        entry["seconds"] = round(state["seconds"], 2)
        entry["seconds_per_example"] = round(state["seconds"] / state["examples"], 4) if state["examples"] else None
        entry["o200k_tokens_per_s"] = round(state["o200k_tokens"] / state["seconds"], 1) if state["seconds"] else None
        entry["results"] = {label: aggregate(recs, names) for label, recs in records[method.name].items()}
        out["methods"][method.name] = entry
    limits = [n for n in (limit_of(m, task) for m in methods) if n]
    if limits:
        k = min(min(limits), len(examples))
        out["subsample"] = {
            "n_examples": k,
            "why": "slow peers see only the first examples; every method on the same ones, for a fair comparison",
            "methods": {
                m.name: {
                    label: aggregate([r for r in recs if r["index"] < k], names)
                    for label, recs in records[m.name].items()
                }
                for m in methods
                if "error" not in status[m.name] and records[m.name]
            },
        }
    if task == "needle":
        out["heatmaps"] = needle_heatmaps(methods, records, config)
    return out


def needle_heatmaps(
    methods: list[Method], records: dict[str, dict[str, list[dict[str, Any]]]], config: dict[str, Any]
) -> dict[str, Any]:
    """Needle kept rate per (length, depth) for every method and budget (``null`` where not evaluated)."""
    lengths, depths = config["needle_lengths"], config["needle_depths"]
    maps: dict[str, Any] = {"lengths": lengths, "depths": depths, "methods": {}}
    for method in methods:
        per_label = {}
        for label, recs in records[method.name].items():
            cells: dict[tuple[int, float], list[float]] = defaultdict(list)
            for r in recs:
                cells[(r["meta"]["length"], r["meta"]["depth"])].append(r["metrics"]["needle_kept"])
            per_label[label] = [
                [round(sum(cells[(n, d)]) / len(cells[(n, d)]), 4) if cells[(n, d)] else None for d in depths]
                for n in lengths
            ]
        maps["methods"][method.name] = per_label
    return maps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small samples (< 10 minutes on a 2-core CPU)")
    parser.add_argument("--model", default=None, help="critic folder (default: the embedded default critic)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many examples per task (smoke tests)")
    parser.add_argument("--needle-lengths", default=None, help="comma-separated haystack lengths in o200k tokens")
    parser.add_argument("--context-tokens", type=int, default=None, help="context size of multikey/VT/SQuAD")
    parser.add_argument("--fusion-weight", type=float, default=0.5, help="BM25 weight of ours+bm25 (default 0.5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="output JSON (default: results/quality[-quick].json)")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> dict[str, Any]:
    """The sample sizes of this run (full or quick, then the command-line overrides)."""
    config = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.needle_lengths:
        config["needle_lengths"] = [int(x) for x in args.needle_lengths.split(",")]
    if args.context_tokens:
        config["context_tokens"] = args.context_tokens
    if args.limit is not None:
        config["hotpot_n"] = min(config["hotpot_n"], args.limit)
        config["synthetic_n"] = min(config["synthetic_n"], args.limit)
        config["squad_n"] = min(config["squad_n"], args.limit)
        config["needle_depths"] = config["needle_depths"][: max(1, args.limit)]
        config["llmlingua_n"] = {t: min(n, args.limit) for t, n in config["llmlingua_n"].items()}
    return config


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_offline()
    threads = set_threads(args.threads)
    config = make_config(args)
    tasks = [t for t in args.tasks.split(",") if t]
    for task in tasks:
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    out_path = args.out or RESULTS_DIR / ("quality-quick.json" if args.quick else "quality.json")
    started = time.perf_counter()
    methods, build_errors = build_methods(args, config)
    result: dict[str, Any] = {
        "benchmark": "quality",
        "quick": args.quick,
        **run_info(threads),
        "model": args.model or "default",
        "config": config,
        "budgets": {label: f"at most 1/{x:g} of the context's o200k tokens" for label, x in BUDGETS.items()},
        "methods": {m.name: m.describe() for m in methods},
        "failed_methods": build_errors,
        "tasks": {},
    }
    for name, error in build_errors.items():
        result["methods"][name] = {"error": error}
    raw_path = out_path.parent / "raw" / (out_path.stem + ".jsonl")
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    with raw_path.open("w", encoding="utf-8") as raw:
        for task in tasks:
            began = time.perf_counter()
            examples = build_examples(task, config)
            if args.limit is not None:
                examples = examples[: args.limit]
            log(f"{task}: {len(examples)} examples built in {time.perf_counter() - began:.1f} s")
            records, status = run_task(task, examples, methods, raw)
            result["tasks"][task] = summarise_task(task, examples, methods, records, status, config)
            result["tasks"][task]["seconds"] = round(time.perf_counter() - began, 1)
            result["wall_seconds"] = round(time.perf_counter() - started, 1)
            write_json(out_path, result)
    log(f"wrote {out_path} in {time.perf_counter() - started:.0f} s")
    return result


if __name__ == "__main__":
    main()
