"""Scale-out on Ray, on this machine: the Ray Data stage with 1 and 2 actors, then the Ray Serve app under load.

* **Ray Data** (``cprs_integrations.ray.compress_dataset``): ``--docs`` documents of about ``--doc-tokens`` o200k
  tokens (slices of the essays the other benchmarks use), each with its own question, compressed at
  ``target_ratio=0.2``; once with 1 actor, once with 2, **one torch thread per actor** (otherwise two actors on two
  cores measure thread oversubscription, not scaling). Reported per run: throughput (documents/s, critic tokens/s)
  over the stage's own time (first batch started to last batch done, from Ray Data's execution stats: starting the
  actors and loading the critic excluded, as they are once per job) and over the wall time, and the scaling ratio
  2 actors / 1 actor of each. The rows of the two runs are compared: in fp32 they are the same; in bf16
  (``dtype="auto"`` on a CPU with AMX) a near-tie may flip, because how the engine groups windows into forward
  passes changes the rounding.
* **Ray Serve** (``cprs_integrations.ray.build_app``): ``--replicas`` replicas (1 torch thread each), ``--clients``
  concurrent clients (``RemoteCPRSEngine``, no retries, so every error counts) sending their own document for
  ``--serve-seconds``: p50 / p95 / p99 latency, errors, throughput, and the engine's windows per forward pass from
  ``/metrics`` (one replica answers each scrape: exact with 1 replica).

The load generator, Ray's own processes and the actors share the machine's cores: quote figures with that. Figures
for a GPU cluster are not measured here (README, "Scale out on Ray").

Usage::

    .venv/bin/python -m benchmarks.ray_scale                  # 500 documents, 32 clients for 60 s
    .venv/bin/python -m benchmarks.ray_scale --quick          # 40 documents, 10 s of load: checks that it runs
    .venv/bin/python -m benchmarks.ray_scale --docs 200 --skip-serve --dtype float32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, SEED, cpu_model, run_info, set_offline, write_json
from benchmarks.load import drive, free_port, scrape, summary

#: Questions the documents are compressed for (cycled: each document gets one).
QUESTIONS = (
    "How should a startup find its first users?",
    "What do investors look for in founders?",
    "Why do most startups fail?",
    "How do you come up with good startup ideas?",
    "What makes a good essay?",
    "How should founders think about fundraising?",
    "What is the role of determination in success?",
    "How do cities shape ambition?",
    "When should a company be acquired?",
    "How do you hire the first employees?",
    "What is wrong with the way schools teach?",
    "How do programming languages affect thinking?",
    "Why is wealth not a zero-sum game?",
    "How should you choose what to work on?",
    "What distinguishes great hackers?",
    "How do growth rates matter for startups?",
)


def documents(n: int, doc_tokens: int) -> list[dict[str, Any]]:
    """``n`` rows: an id, a question and a slice of the essays of about ``doc_tokens`` o200k tokens."""
    from benchmarks.tasks import essay_of_tokens

    rng = random.Random(SEED)
    return [
        {"id": i, "query": QUESTIONS[i % len(QUESTIONS)], "text": essay_of_tokens(rng, doc_tokens)} for i in range(n)
    ]


def critic_tokens(model: str | None, texts: list[str]) -> list[int]:
    """Critic tokens of each text (what the critic reads, windows' prefixes aside)."""
    from transformers import AutoTokenizer

    from cprs_integrations.models.loading import default_critic_path

    tokenizer = AutoTokenizer.from_pretrained(model or default_critic_path(), local_files_only=True)
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def run_stage(rows: list[dict[str, Any]], actors: int, args: argparse.Namespace) -> dict[str, Any]:
    """One pass of the Ray Data stage over ``rows`` with ``actors`` actors of one torch thread each: the wall time,
    the stage's own time (first batch started to last batch done: actor start and critic load excluded, from Ray
    Data's execution stats) and the output rows."""
    import ray

    from cprs_integrations import CompressionOptions
    from cprs_integrations.ray import compress_dataset

    out = compress_dataset(
        ray.data.from_items(rows),
        model=args.model,
        engine_kwargs={"dtype": args.dtype},
        options=CompressionOptions(target_ratio=0.2),
        concurrency=actors,
        num_cpus=1,
        torch_threads=1,
        batch_size=args.batch_size,
    )
    started = time.perf_counter()
    done = out.materialize()
    wall = time.perf_counter() - started
    stage_s = None
    try:  # a private accessor of the numbers ``Dataset.stats()`` prints; absent in another Ray, the figure is too
        for operator in done._get_stats_summary().operators_stats:
            if operator.operator_name.startswith("MapBatches(CompressBatch"):
                stage_s = float(operator.time_total_s)
    except AttributeError:
        pass
    got = done.select_columns(["id", "compressed", "compressed_tokens", "compressed_error"]).take_all()
    return {"wall_s": wall, "stage_s": stage_s, "rows": got}


def data_run(
    rows: list[dict[str, Any]], tokens: list[int], actors: int, args: argparse.Namespace
) -> tuple[dict[str, Any], list[Any]]:
    """The stage with ``actors`` actors: throughput over the wall time and over the stage's own time."""
    run = run_stage(rows, actors, args)
    wall, stage_s, got = run["wall_s"], run["stage_s"], run["rows"]
    return {
        "actors": actors,
        "torch_threads_per_actor": 1,
        "rows": len(got),
        "errors": sum(r["compressed_error"] is not None for r in got),
        "wall_s": round(wall, 2),
        "stage_s": None if stage_s is None else round(stage_s, 2),
        "docs_per_s_wall": round(len(got) / wall, 3),
        "critic_tokens_per_s_wall": round(sum(tokens) / wall, 1),
        "docs_per_s": round(len(got) / stage_s, 3) if stage_s else None,
        "critic_tokens_per_s": round(sum(tokens) / stage_s, 1) if stage_s else None,
    }, got


def serve_run(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The Serve app under ``args.clients`` concurrent clients for ``args.serve_seconds``."""
    from ray import serve

    from cprs_integrations import RemoteCPRSEngine
    from cprs_integrations.ray import build_app
    from cprs_integrations.server import ServerSettings

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app(
        args.model,
        num_replicas=args.replicas,
        ray_actor_options={"num_cpus": 1},
        engine_kwargs={"dtype": args.dtype},
        torch_threads=1,
        settings=ServerSettings(metrics_open=True, request_timeout_s=600.0),
    )
    started = time.perf_counter()
    serve.run(app, name="cprs-bench", route_prefix="/")
    ready_s = time.perf_counter() - started
    url = f"http://127.0.0.1:{port}"
    jobs = [(r["query"], r["text"]) for r in rows[: args.clients]]
    try:
        before = scrape(url)
        with RemoteCPRSEngine(url, timeout=600, max_retries=0, max_connections=args.clients) as remote:

            async def call(client: int, query: str, text: str) -> Any:
                return await remote.acompress(query, [text], target_ratio=0.2)

            outcomes, wall = asyncio.run(drive(call, jobs, args.clients, args.serve_seconds))
        after = scrape(url)
    finally:
        serve.shutdown()
    batches = after.get("cprs_engine_batches_total", 0) - before.get("cprs_engine_batches_total", 0)
    windows = after.get("cprs_engine_windows_total", 0) - before.get("cprs_engine_windows_total", 0)
    return {
        "replicas": args.replicas,
        "torch_threads_per_replica": 1,
        "clients": args.clients,
        "seconds": args.serve_seconds,
        "ready_s": round(ready_s, 1),
        **summary(outcomes, wall),
        "forward_passes": int(batches),
        "windows_per_forward_pass": round(windows / batches, 2) if batches else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=500, help="documents (default: 500)")
    parser.add_argument("--doc-tokens", type=int, default=1000, help="o200k tokens per document (default: 1000)")
    parser.add_argument("--model", default=None, help="critic folder (default: the embedded critic)")
    parser.add_argument("--dtype", default="auto", help="critic dtype (default: auto, bf16 on CPUs with AMX)")
    parser.add_argument("--batch-size", type=int, default=64, help="Ray's rows per map_batches call (default: 64)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent Serve clients (default: 32)")
    parser.add_argument("--serve-seconds", type=float, default=60.0, help="seconds of Serve load (default: 60)")
    parser.add_argument("--replicas", type=int, default=1, help="Serve replicas (default: 1)")
    parser.add_argument(
        "--quick", action="store_true", help="40 documents in batches of 8, 10 s of load: checks that it runs"
    )
    parser.add_argument("--skip-serve", action="store_true", help="only the Ray Data runs")
    parser.add_argument("--out", default=None, help="result file (default: benchmarks/results/ray_scale.json)")
    args = parser.parse_args()
    if args.quick:  # small batches, so that both actors get work from 40 documents
        args.docs, args.serve_seconds = min(args.docs, 40), min(args.serve_seconds, 10.0)
        args.batch_size = min(args.batch_size, 8)
    set_offline()
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "4")

    import ray

    rows = documents(args.docs, args.doc_tokens)
    tokens = critic_tokens(args.model, [r["text"] for r in rows])
    cores = os.cpu_count() or 2
    ray.init(num_cpus=max(2, cores), include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    try:
        one, out_one = data_run(rows, tokens, 1, args)
        two, out_two = data_run(rows, tokens, 2, args)
        serve = None if args.skip_serve else serve_run(rows, args)
    finally:
        ray.shutdown()
    ratios = {
        key: round(two[key] / one[key], 3) if one[key] and two[key] else None
        for key in ("docs_per_s", "docs_per_s_wall")
    }
    result = {
        "run": run_info(threads=1),
        "critic": args.model or "embedded default",
        "docs": len(rows),
        "o200k_tokens_per_doc": args.doc_tokens,
        "critic_tokens": sum(tokens),
        "ray": ray.__version__,
        "ray_batch_size": args.batch_size,
        "note": "one machine: the actors, Ray's processes and the load generator share its cores",
        "data": {
            "one_actor": one,
            "two_actors": two,
            "scaling_ratio": ratios["docs_per_s"],
            "scaling_ratio_wall": ratios["docs_per_s_wall"],
            "rows_with_another_text_1_vs_2_actors": sum(a != b for a, b in zip(out_one, out_two)),
        },
        "serve": serve,
    }
    path = write_json(Path(args.out or RESULTS_DIR / "ray_scale.json"), result)
    print(f"cpu: {cpu_model()} ({cores} cores); ray {ray.__version__}; {len(rows)} docs, {result['critic_tokens']:,}")
    print(f"critic tokens; results in {path}")
    print(json.dumps({k: v for k, v in result.items() if k != "run"}, indent=2))


if __name__ == "__main__":
    main()
