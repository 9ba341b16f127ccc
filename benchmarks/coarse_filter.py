"""The coarse filter (``coarse_filter="auto"``) against scoring every window (``"off"``), in one run.

Sections (each can be run alone with ``--sections``):

- ``signals``: no critic. For each long example, where its gold windows (those holding a gold span) rank among the
  call's windows under BM25 alone, the static embeddings alone, and the fused ranking the filter uses; reported as
  the share of gold windows inside the number of windows the filter keeps at 10x and 50x (``windows_to_keep``).
- ``quality``: what survives compression with ``auto`` and with ``off`` at 10x and 50x (HotpotQA also at a tight
  256-token budget): needles at several lengths and depths, multi-key needles, paraphrased facts with distractors,
  variable chains, HotpotQA questions whose paragraphs are hidden in unrelated essay text. ``off`` scores each
  example once and selects at every budget (``engine.select``); ``auto`` compresses once per budget.
- ``retriever``: a LangChain ``CPRSRetriever`` over a fixed corpus (1,000 documents, 1M tokens): the first query
  prepares the corpus, the next ones reuse it from the engine's cache.
- ``speed``: seconds of ``compress`` on essays (a needle at 50% depth), ``auto`` and ``off`` side by side at 10x
  and 50x, at 128K and 1M o200k tokens (``--speed-lengths``).
- ``decoder``: the same with the tiny random decoder critic (8K-token windows; ``--decoder-lengths``, e.g. 10M to
  see the filter's own cost where the critic costs little).
- ``tiny10m``: 10M tokens with the tiny random encoder critic, off and auto at 10x.

Usage::

    .venv/bin/python -m benchmarks.coarse_filter                       # all sections, about 30 minutes (2 cores)
    .venv/bin/python -m benchmarks.coarse_filter --quick               # small sizes, a few minutes
    .venv/bin/python -m benchmarks.coarse_filter --sections speed --speed-lengths 131072 1048576
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, o200k, run_info, set_offline, set_threads, write_json
from benchmarks.tasks import (
    BenchExample,
    hotpot_hidden_examples,
    multikey_examples,
    needle_examples,
    paraphrase_examples,
    unshared_examples,
    variable_tracking_examples,
)

RATIOS = {"10x": 0.1, "50x": 0.02}
SECTIONS = ("signals", "quality", "speed", "retriever", "decoder", "tiny10m")


def kept(example: BenchExample, text: str, spans: list[tuple[int, int]]) -> float:
    """Share of the example's gold items that survive: gold spans 90% covered by kept spans, or gold strings."""
    if example.gold_spans:
        hits = [
            sum(max(0, min(e, ge) - max(s, gs)) for s, e in spans) >= 0.9 * (ge - gs) for gs, ge in example.gold_spans
        ]
    else:
        hits = [g in text for g in example.gold_strings]
    return float(np.mean(hits))


def quality_examples(
    quick: bool, tasks: list[str] | None = None, limit: int | None = None
) -> dict[str, list[BenchExample]]:
    """The examples of each task (built lazily: only the tasks asked for; the first ``limit`` of each)."""
    builders = _quick_tasks() if quick else _full_tasks()
    return {task: build()[:limit] for task, build in builders.items() if tasks is None or task in tasks}


def _quick_tasks() -> dict[str, Callable[[], list[BenchExample]]]:
    return {
        "needle": lambda: list(needle_examples([32768], [0.0, 0.5, 1.0])),
        "paraphrase": lambda: list(paraphrase_examples(4, 32768)),
        "variable_chain": lambda: list(variable_tracking_examples(2, 32768)),
        "hotpot_hidden": lambda: list(hotpot_hidden_examples(4, 32768)),
        "unshared": lambda: list(unshared_examples(4, 32768)),
    }


def _full_tasks() -> dict[str, Callable[[], list[BenchExample]]]:
    return {
        "needle": lambda: (
            list(needle_examples([4096, 32768, 131072], [0.0, 0.25, 0.5, 0.75, 1.0]))
            + list(needle_examples([1048576], [0.0, 0.5, 1.0]))
        ),
        "multikey": lambda: list(multikey_examples(10, 131072)),
        "paraphrase": lambda: list(paraphrase_examples(30, 131072)),
        "variable_chain": lambda: (
            list(variable_tracking_examples(10, 131072)) + list(variable_tracking_examples(2, 1048576))
        ),
        "hotpot_hidden": lambda: list(hotpot_hidden_examples(60, 131072)),
        "unshared": lambda: list(unshared_examples(20, 131072)),
    }


def budgets_for(task: str, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The budgets of a task by name (``10x``, ``50x``, and ``256 tokens`` for HotpotQA); ``only``: these names."""
    budgets: dict[str, dict[str, Any]] = {name: {"target_ratio": r} for name, r in RATIOS.items()}
    if task == "hotpot_hidden":
        budgets["256 tokens"] = {"target_tokens": 256}
    return {name: b for name, b in budgets.items() if only is None or name in only}


def run_quality(
    engine: Any, examples: dict[str, list[BenchExample]], only_budgets: list[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, items in examples.items():
        budgets = budgets_for(task, only_budgets)
        rows = []
        for ex in items:
            row: dict[str, Any] = {"id": ex.id, "tokens": ex.meta.get("tokens", ex.meta.get("length"))}
            started = time.perf_counter()
            scored = engine.score(ex.query, [ex.text], coarse_filter="off", show_progress=False)
            row["off_score_s"] = time.perf_counter() - started
            for name, budget in budgets.items():
                [off] = engine.select(scored, **budget)
                started = time.perf_counter()
                [auto] = engine.compress(ex.query, [ex.text], **budget, show_progress=False)
                row[f"auto_s {name}"] = time.perf_counter() - started
                row[f"off {name}"] = kept(ex, off.text, [(s.start, s.end) for s in off.spans])
                row[f"auto {name}"] = kept(ex, auto.text, [(s.start, s.end) for s in auto.spans])
                row[f"windows {name}"] = [int(auto.timings["windows"]), int(auto.timings["windows_scored"])]
            rows.append(row)
            print(task, row, flush=True)
        summary = {
            f"{method} {name}": round(float(np.mean([r[f"{method} {name}"] for r in rows])), 4)
            for name in budgets
            for method in ("off", "auto")
        }
        lost = [
            {"id": r["id"], "budget": name, "off": r[f"off {name}"], "auto": r[f"auto {name}"]}
            for r in rows
            for name in budgets
            if r[f"auto {name}"] < r[f"off {name}"]
        ]
        out[task] = {"n": len(rows), "summary": summary, "lost_by_auto": lost, "rows": rows}
        print(task, summary, "lost:", lost, flush=True)
    return out


def run_signals(engine: Any, examples: dict[str, list[BenchExample]]) -> dict[str, Any]:
    """Gold-window recall inside the kept count, per signal (BM25, embeddings, fused), no critic."""
    from cprs_integrations.engine import coarse
    from cprs_integrations.engine.lexical import bm25, zscore
    from cprs_integrations.engine.options import CompressionOptions

    embed = engine._embedder(0)
    out: dict[str, Any] = {}
    for task, items in examples.items():
        recalls: dict[str, list[float]] = {}
        for ex in items:
            options = CompressionOptions(coarse_filter="off")
            plan = engine._plan(ex.query, [ex.text], options)  # windows as the engine cuts them (benchmark only)
            texts, per_window = plan.window_texts()
            lowered = [t.lower() for t in texts]
            bounds = [
                (int(plan.tokenized[0].offsets[s, 0]), int(plan.tokenized[0].offsets[e - 1, 1]))
                for _, s, e in plan.windows
            ]
            gold = {w for w, (a, b) in enumerate(bounds) for gs, ge in ex.gold_spans if gs < b and a < ge}
            query_vector = embed([ex.query])[0]
            flat = [s for sents in per_window for s in sents]
            owner = np.repeat(np.arange(len(texts)), [len(s) for s in per_window])
            best = np.full(len(texts), -1.0)
            np.maximum.at(best, owner, embed(flat) @ query_vector)
            lexical = bm25(ex.query, lowered)
            signals = {"bm25": zscore(lexical), "embedding": zscore(best)}
            signals["fused"] = signals["bm25"] + coarse.EMBEDDING_WEIGHT * signals["embedding"]
            for budget, ratio in RATIOS.items():
                k = coarse.windows_to_keep(ratio, len(texts), len(plan.tokenized[0]))
                for name, score in signals.items():
                    top = set(np.argsort(-score, kind="stable")[:k].tolist())
                    recalls.setdefault(f"{name} {budget}", []).append(len(gold & top) / max(1, len(gold)))
                choice = coarse.choose_windows(ex.query, texts, per_window, [0] * len(texts), {0: k}, embed)
                chosen = set(np.flatnonzero(choice.scored).tolist())
                recalls.setdefault(f"filter {budget}", []).append(len(gold & chosen) / max(1, len(gold)))
        out[task] = {"n": len(items), **{k: round(float(np.mean(v)), 4) for k, v in recalls.items()}}
        print("signals", task, out[task], flush=True)
    return out


def off_and_auto(engine: Any, query: str, text: str, ratio: float) -> dict[str, Any]:
    """One ``compress`` with ``coarse_filter="off"`` then one with ``"auto"``: seconds, windows read, the needle kept,
    each call's timings, and the speed-up."""
    row: dict[str, Any] = {}
    for mode in ("off", "auto"):
        started = time.perf_counter()
        [r] = engine.compress(query, [text], target_ratio=ratio, coarse_filter=mode, show_progress=False)
        row[f"{mode}_s"] = round(time.perf_counter() - started, 2)
        row[f"{mode}_windows_scored"] = int(r.timings["windows_scored"])
        row[f"{mode}_needle_kept"] = "special magic" in r.text
        row["windows"] = int(r.timings["windows"])
        row[f"{mode}_timings"] = {k: round(v, 2) for k, v in r.timings.items()}
    row["speedup"] = round(row["off_s"] / row["auto_s"], 2)
    return row


def run_speed(lengths: list[int]) -> list[dict[str, Any]]:
    """One call per point on an engine without the prepared-text cache (each call tokenizes, as a first call does)."""
    from benchmarks.speed import speed_text
    from cprs_integrations.engine.engine import CPRSEngine

    engine = CPRSEngine.from_pretrained(max_input_tokens=4_000_000, cache_tokens=0)
    # One untimed call first: it loads the static model and warms the critic's kernels, once per process (a server
    # pays this at its first request); without it the first timed calls carry it (about 0.3 s and 0.7 s here).
    warm_query, warm_text = speed_text(40_000)
    engine.compress(warm_query, [warm_text], target_ratio=0.1, show_progress=False)
    rows = []
    for n in lengths:
        query, text = speed_text(n)
        for name, ratio in RATIOS.items():
            row = {"o200k_tokens": o200k()(text), "budget": name, **off_and_auto(engine, query, text, ratio)}
            rows.append(row)
            print("speed", row, flush=True)
    return rows


def run_retriever(engine: Any, tokens: int, n_docs: int) -> dict[str, Any]:
    """LangChain ``CPRSRetriever`` over a fixed corpus of ``n_docs`` essay documents (``tokens`` in all): the first
    query (tokenizes, segments and embeds the corpus) and the next ones (from the engine's prepared-text cache)."""
    import random

    from langchain_core.documents import Document

    from benchmarks.tasks import essay_of_tokens
    from cprs_integrations.langchain import CPRSRetriever

    rng = random.Random(7)
    documents = [
        Document(page_content=essay_of_tokens(rng, tokens // n_docs), metadata={"i": i}) for i in range(n_docs)
    ]
    needle = "The archive's vault combination is 4417-kestrel."
    documents[n_docs // 3].page_content += "\n\n" + needle
    retriever = CPRSRetriever(documents=documents, engine=engine, target_ratio=0.1, k=4)
    row: dict[str, Any] = {"documents": n_docs, "o200k_tokens": sum(o200k()(d.page_content) for d in documents)}
    queries = [
        "What is the vault combination of the archive?",
        "How do startups find good ideas?",
        "What is the vault combination of the archive?",
    ]
    for i, query in enumerate(queries):
        started = time.perf_counter()
        found = retriever.invoke(query)
        row[f"query_{i}_s"] = round(time.perf_counter() - started, 2)
        if i == 0:
            row["needle_found"] = any("4417-kestrel" in d.page_content for d in found)
    print("retriever", row, flush=True)
    return row


def run_tiny_decoder(lengths: list[int]) -> list[dict[str, Any]]:
    """The same comparison with the tiny random decoder critic (Qwen2 tokenizer, 8K-token windows): the filter's
    ratio for a decoder critic, and its own cost where the critic costs little (10M tokens)."""
    from benchmarks.speed import speed_text, tiny_decoder_dir
    from cprs_integrations.engine.engine import CPRSEngine

    engine = CPRSEngine.from_pretrained(tiny_decoder_dir(), max_input_tokens=20_000_000, cache_tokens=0)
    rows = []
    for n in lengths:
        query, text = speed_text(n)
        for name, ratio in RATIOS.items():
            critic = "tiny decoder (random, 4 layers)"
            row = {"o200k_tokens": n, "budget": name, "critic": critic, **off_and_auto(engine, query, text, ratio)}
            rows.append(row)
            print("tiny-decoder", row, flush=True)
    return rows


def run_tiny_encoder(tokens: int) -> dict[str, Any]:
    """10M tokens with the tiny random encoder critic (MiniLM tokenizer, 512-token windows), once per mode at 10x:
    where the critic costs little, what the rest of the engine and the filter cost at that scale."""
    from benchmarks.common import CACHE_DIR
    from benchmarks.speed import speed_text
    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.models.testing import save_tiny_encoder_critic

    folder = CACHE_DIR / "tiny-encoder-critic"
    if not (folder / "model.safetensors").is_file():
        save_tiny_encoder_critic(folder)
    engine = CPRSEngine.from_pretrained(str(folder), max_input_tokens=3 * tokens, cache_tokens=0)
    query, text = speed_text(tokens)
    critic = "tiny encoder (random)"
    row = {"o200k_tokens": tokens, "budget": "10x", "critic": critic, **off_and_auto(engine, query, text, 0.1)}
    print("tiny-encoder", row, flush=True)
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--tasks", nargs="+", default=None, help="signals / quality: only these tasks")
    parser.add_argument("--limit", type=int, default=None, help="signals / quality: first N examples of each task")
    parser.add_argument("--budgets", nargs="+", default=None, help="quality: only these budgets (e.g. '256 tokens')")
    parser.add_argument("--quick", action="store_true", help="small sizes (32K tokens), a few minutes")
    parser.add_argument("--speed-lengths", nargs="+", type=int, default=None, help="o200k tokens per speed point")
    parser.add_argument("--decoder-lengths", nargs="+", type=int, default=None, help="tiny decoder points")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "coarse_filter.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_offline()
    threads = set_threads(args.threads)
    from cprs_integrations.engine.engine import CPRSEngine

    engine = CPRSEngine.from_pretrained(max_input_tokens=4_000_000)
    result: dict[str, Any] = {"run": run_info(threads), "quick": args.quick}
    sections: dict[str, Callable[[], Any]] = {
        "signals": lambda: run_signals(engine, quality_examples(args.quick, args.tasks, args.limit)),
        "quality": lambda: run_quality(engine, quality_examples(args.quick, args.tasks, args.limit), args.budgets),
        "speed": lambda: run_speed(args.speed_lengths or ([32768] if args.quick else [131072, 1048576])),
        "retriever": lambda: run_retriever(engine, 65536 if args.quick else 1048576, 64 if args.quick else 1000),
        "decoder": lambda: run_tiny_decoder(args.decoder_lengths or ([65536] if args.quick else [131072, 1048576])),
        "tiny10m": lambda: run_tiny_encoder(262144 if args.quick else 10_000_000),
    }
    for name in args.sections:
        started = time.perf_counter()
        result[name] = sections[name]()
        print(f"section {name}: {time.perf_counter() - started:.0f} s", flush=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
