"""Critic quality where it used to lose (issue 14), for model selection and for multi-hop: one critic, several
``hops``, next to BM25 and MiniLM cosine, in one run.

Tasks (dev sets are ours: ``cprs_integrations/training/hard_tasks.py`` with ``split="dev"``, other names and question
phrasings than training, another seed; HotpotQA **dev** buckets 85-89, never trained on):

- ``hotpot``: HotpotQA dev, supporting-fact recall at 5x / 10x / 20x and all facts kept at 10x (``engine.compress``
  as users run it: sentence units, BM25 fusion, the separator charged).
- ``paraphrase``: a fact about a person asked with a dev-only paraphrase, 3 facts about the same person and 2 other
  people with the same relation as distractors, in about 1,500 tokens of essays; budget: the true fact plus the
  longest distractor (about two sentences). Kept = the true fact.
- ``chains``: a 5-statement variable chain and a decoy chain of the same shape (another value), spread over 8K-32K
  tokens of essays; budget: exactly the 5 statements joined by the separator. Link recall and whole chain kept.
- ``squad``: SQuAD answers in 8K-token contexts at 10x and 50x (held out; the answer string kept).
- ``cost``: end-to-end throughput (o200k tokens per second of ``compress`` at 10x) with each ``hops`` against
  ``hops=1``, side by side: 100 HotpotQA dev documents (about 1.3K tokens each) and essays of 32K and 128K tokens
  (the coarse filter on, as by default).

Usage::

    .venv/bin/python -m benchmarks.critic_dev --model runs/critic-v4 --hops 1 2 --out benchmarks/results/dev_v4.json
    .venv/bin/python -m benchmarks.critic_dev --limit 5          # a quick look
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, SEPARATOR, o200k, run_info, set_offline, set_threads, stable_seed, write_json
from benchmarks.methods import bm25_scores, cosine_scores, fill, spans_output
from benchmarks.metrics import Output, example_metrics, span_kept
from benchmarks.tasks import BenchExample, essay_of_tokens, hotpot_bench_example, plain_example, squad_examples

TASKS = ("hotpot", "paraphrase", "chains", "squad", "cost")
HOTPOT_RATIOS = {"5x": 5, "10x": 10, "20x": 20}
SQUAD_RATIOS = {"10x": 10, "50x": 50}


def hotpot_dev(limit: int | None, split: str = "dev") -> list[BenchExample]:
    """HotpotQA questions of a split (``dev`` for selection; ``test`` for held-out figures), in file order."""
    from cprs_integrations.training.data import hotpot_records

    examples = [e for e in (hotpot_bench_example(r) for r in hotpot_records(split)) if e is not None]
    return examples[:limit]


def paraphrase_dev(n: int) -> list[BenchExample]:
    from cprs_integrations.training.hard_tasks import paraphrase_example

    out = []
    for i in range(n):
        rng = random.Random(stable_seed("paraphrase-dev", i))
        made = paraphrase_example(rng, essay_of_tokens(rng, 1500), split="dev")
        facts = made.meta["facts"]
        budget = o200k()(facts[0]) + max(o200k()(f) for f in facts[1:]) + o200k()(SEPARATOR)
        out.append(
            plain_example(
                "paraphrase",
                f"paraphrase-dev-{i}",
                made.query,
                made.text,
                gold_spans=made.keep,
                meta={"budget": budget},
            )
        )
    return out


def chains_dev(n: int) -> list[BenchExample]:
    from cprs_integrations.training.hard_tasks import decoy_chain_example

    out = []
    for i in range(n):
        rng = random.Random(stable_seed("chains-dev", i))
        tokens = (8192, 16384, 32768)[i % 3]
        made = decoy_chain_example(rng, essay_of_tokens(rng, tokens))
        budget = o200k()(SEPARATOR.join(made.meta["chain"]))
        out.append(
            plain_example(
                "chains",
                f"chains-dev-{i}",
                made.query,
                made.text,
                gold_spans=made.keep,
                meta={"budget": budget, "tokens": tokens},
            )
        )
    return out


def kept_share(example: BenchExample, output: Output) -> float:
    return float(np.mean([span_kept(example, output, span) for span in example.gold_spans]))


def engine_output(engine: Any, example: BenchExample, tokens: int, hops: int) -> Output:
    [result] = engine.compress(
        example.query,
        [example.text],
        target_tokens=max(1, tokens),
        separator=SEPARATOR,
        hops=hops,
        show_progress=False,
    )
    spans = np.asarray([(s.start, s.end) for s in result.spans], dtype=np.int64).reshape(-1, 2)
    return Output(text=result.text, spans=spans, tokens=result.compressed_tokens)


def run_hotpot(engine: Any, examples: list[BenchExample], hops: list[int]) -> dict[str, Any]:
    rows: dict[str, dict[str, list[float]]] = {f"hops={h}": {} for h in hops}
    rows["bm25"] = {}
    for example in examples:
        original = o200k()(example.text)
        lexical = bm25_scores(example.query, example.unit_texts(with_titles=True))
        for label, ratio in HOTPOT_RATIOS.items():
            budget = int(original // ratio)
            outputs = {f"hops={h}": engine_output(engine, example, budget, h) for h in hops}
            outputs["bm25"] = spans_output(example.text, fill(example, lexical, budget))
            for method, output in outputs.items():
                metrics = example_metrics(example, output)
                rows[method].setdefault(f"sf_recall {label}", []).append(metrics["sf_recall"])
                if label == "10x":
                    rows[method].setdefault("all_facts_kept 10x", []).append(metrics["all_facts_kept"])
    return _summary(rows, len(examples))


def run_budgeted(engine: Any, examples: list[BenchExample], hops: list[int], baselines: bool) -> dict[str, Any]:
    """Each example at its own budget (``meta["budget"]``): share of gold spans kept and all of them kept."""
    rows: dict[str, dict[str, list[float]]] = {f"hops={h}": {} for h in hops}
    for example in examples:
        budget = example.meta["budget"]
        outputs = {f"hops={h}": engine_output(engine, example, budget, h) for h in hops}
        if baselines:
            texts = example.unit_texts()
            outputs["bm25"] = spans_output(example.text, fill(example, bm25_scores(example.query, texts), budget))
            outputs["minilm-cosine"] = spans_output(
                example.text, fill(example, cosine_scores(example.query, texts), budget)
            )
        for method, output in outputs.items():
            share = kept_share(example, output)
            rows.setdefault(method, {}).setdefault("kept", []).append(share)
            rows[method].setdefault("all kept", []).append(float(share == 1.0))
    return _summary(rows, len(examples))


def run_squad(engine: Any, examples: list[BenchExample]) -> dict[str, Any]:
    rows: dict[str, dict[str, list[float]]] = {"hops=1": {}, "bm25": {}}
    for example in examples:
        original = o200k()(example.text)
        [scored] = engine.score(example.query, [example.text], coarse_filter="off", show_progress=False)
        lexical = bm25_scores(example.query, example.unit_texts())
        for label, ratio in SQUAD_RATIOS.items():
            budget = int(original // ratio)
            [result] = engine.select([scored], target_tokens=max(1, budget), separator=SEPARATOR)
            ours = Output(text=result.text, spans=None, tokens=result.compressed_tokens)
            outputs = {"hops=1": ours, "bm25": spans_output(example.text, fill(example, lexical, budget))}
            for method, output in outputs.items():
                rows[method].setdefault(f"answer kept {label}", []).append(
                    example_metrics(example, output)["answer_kept"]
                )
    return _summary(rows, len(examples))


def run_cost(engine: Any, hops: list[int], limit: int | None) -> dict[str, Any]:
    """Seconds of ``compress`` at 10x per ``hops``, interleaved (each document with every setting in turn), and the
    throughput of each setting relative to the first of ``hops`` (1 in the committed runs)."""
    from benchmarks.tasks import needle_examples

    sets = {
        "hotpot dev docs": [(e.query, e.text) for e in hotpot_dev(limit or 100)],
        "essays 32K": [(e.query, e.text) for e in needle_examples([32768], [0.5], repeats=2)],
        "essays 128K": [(e.query, e.text) for e in needle_examples([131072], [0.5], repeats=2)],
    }
    out: dict[str, Any] = {}
    for name, docs in sets.items():
        seconds = dict.fromkeys(hops, 0.0)
        tokens = sum(o200k()(text) for _, text in docs)
        engine.compress(docs[0][0], [docs[0][1]], target_ratio=0.1, show_progress=False)  # warm-up
        for query, text in docs:
            for h in hops:
                started = time.perf_counter()
                engine.compress(query, [text], target_ratio=0.1, hops=h, show_progress=False)
                seconds[h] += time.perf_counter() - started
        out[name] = {
            "documents": len(docs),
            "o200k_tokens": tokens,
            "seconds": {f"hops={h}": round(s, 2) for h, s in seconds.items()},
            f"throughput_vs_hops={hops[0]}": {f"hops={h}": round(seconds[hops[0]] / s, 3) for h, s in seconds.items()},
        }
    return out


def _summary(rows: dict[str, dict[str, list[float]]], n: int) -> dict[str, Any]:
    table = {m: {k: round(float(np.mean(v)), 4) for k, v in metrics.items()} for m, metrics in rows.items()}
    return {"n": n, "table": table}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="critic folder (default: the embedded default critic)")
    parser.add_argument("--hops", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--hotpot-split", choices=("dev", "test"), default="dev", help="HotpotQA split of 'hotpot'")
    parser.add_argument("--limit", type=int, default=None, help="at most this many examples per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "critic_dev.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_offline()
    threads = set_threads(args.threads)
    from cprs_integrations.engine.engine import CPRSEngine

    engine = CPRSEngine.from_pretrained(args.model)
    n = args.limit
    sections: dict[str, Callable[[], Any]] = {
        "hotpot": lambda: run_hotpot(engine, hotpot_dev(n, args.hotpot_split), args.hops),
        "paraphrase": lambda: run_budgeted(engine, paraphrase_dev(n or 100), args.hops, baselines=True),
        "chains": lambda: run_budgeted(engine, chains_dev(n or 30), args.hops, baselines=True),
        "squad": lambda: run_squad(engine, list(squad_examples(n or 60, 8192))),
        "cost": lambda: run_cost(engine, args.hops, n),
    }
    result: dict[str, Any] = {
        "run": run_info(threads),
        "critic": args.model or "default",
        "hops": args.hops,
        "hotpot_split": args.hotpot_split,
    }
    for task in args.tasks:
        started = time.perf_counter()
        result[task] = sections[task]()
        result[task]["seconds"] = round(time.perf_counter() - started, 1)
        print(task, result[task], flush=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
