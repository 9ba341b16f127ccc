"""Load on ``cprs serve``: N concurrent clients for S seconds, against the in-process engine on the same requests.

Two phases, one after the other on the same machine (the load generator shares the cores with the server: say so
when quoting figures):

* **server**: ``cprs serve`` in a subprocess (loopback, no key); ``--clients`` asyncio clients
  (:class:`~cprs_integrations.api.client.RemoteCPRSEngine`, no retries: a 429 is counted, then the client waits
  Retry-After, 1 s), each sending its own
  HotpotQA question over its own ~1.3K-token context, again and again, for ``--seconds``.
* **in-process**: the same clients, the same requests, through ``engine.acompress`` in this process.

Rounds of the two phases are interleaved (``--repeats``) and the best of each is kept, as in
``benchmarks/concurrency.py``: on shared cores a round can lose half its speed to a neighbour. Reported per phase:
requests, errors by kind, p50 / p95 / p99 latency of the answered requests, throughput in critic
tokens/s and o200k tokens/s; for the server also the 429s (and how fast they came back), batch fill, forward passes
and windows (from ``/metrics``), requests counted by the server against requests sent (nothing lost or
duplicated), and the server's RSS (start, peak, end). ``--queue-windows`` bounds the server's queue (the overload
run: many clients, a small queue, fast 429s).

Usage::

    .venv/bin/python -m benchmarks.load --tiny --seconds 10                  # the server's own overhead
    .venv/bin/python -m benchmarks.load --seconds 60                         # the embedded default critic
    .venv/bin/python -m benchmarks.load --tiny --clients 256 --queue-windows 64 --seconds 10 --no-in-process
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS_DIR, run_info, set_offline, write_json

#: Clients sharing one connection pool in the server phase.
CLIENTS_PER_POOL = 16


@dataclass
class Outcomes:
    """What the clients of one phase saw."""

    latencies: list[float] = field(default_factory=list)  # answered requests, seconds
    refused: list[float] = field(default_factory=list)  # 429s, seconds to get the refusal
    errors: dict[str, int] = field(default_factory=dict)
    critic_tokens: int = 0
    o200k_tokens: int = 0
    sent: int = 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def drive(
    call: Callable[[int, str, str], Awaitable[Any]],
    jobs: list[tuple[str, str]],
    clients: int,
    seconds: float,
    retry_after_s: float = 1.0,
) -> tuple[Outcomes, float]:
    """``clients`` tasks, client ``i`` sending ``jobs[i % len(jobs)]`` until ``seconds`` have passed."""
    from cprs_integrations.engine.scheduler import QueueFullError

    outcomes = Outcomes()
    stop_at = time.monotonic() + seconds

    async def client(i: int) -> None:
        query, text = jobs[i % len(jobs)]
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            outcomes.sent += 1
            try:
                [result] = await call(i, query, text)
            except QueueFullError:
                outcomes.refused.append(time.perf_counter() - started)
                await asyncio.sleep(retry_after_s)  # a client that honours Retry-After
                continue
            except Exception as error:
                outcomes.errors[type(error).__name__] = outcomes.errors.get(type(error).__name__, 0) + 1
                continue
            outcomes.latencies.append(time.perf_counter() - started)
            outcomes.critic_tokens += int(result.timings.get("critic_tokens", 0))
            outcomes.o200k_tokens += result.original_tokens

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return outcomes, time.perf_counter() - started


def summary(outcomes: Outcomes, wall: float) -> dict[str, Any]:
    ms = [1000 * s for s in outcomes.latencies]
    return {
        "requests_sent": outcomes.sent,
        "answered": len(outcomes.latencies),
        "refused_429": len(outcomes.refused),
        "refusal_p50_ms": None if not outcomes.refused else round(1000 * statistics.median(outcomes.refused), 1),
        "errors": outcomes.errors,
        "wall_s": round(wall, 2),
        "p50_ms": _round(percentile(ms, 50)),
        "p95_ms": _round(percentile(ms, 95)),
        "p99_ms": _round(percentile(ms, 99)),
        "critic_tokens_per_s": round(outcomes.critic_tokens / wall, 1),
        "o200k_tokens_per_s": round(outcomes.o200k_tokens / wall, 1),
        "requests_per_s": round(len(outcomes.latencies) / wall, 2),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# ------------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


@contextlib.contextmanager
def served(args: argparse.Namespace, model: str | None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "cprs_integrations.cli", "serve", "--port", str(port), "--log-level", "warning"]
    command += ["--max-queue-windows", str(args.queue_windows), "--request-timeout", str(args.request_timeout)]
    command += ["--max-texts", "64", "--open-metrics", "--device", args.device]
    if model is not None:
        command += ["--model", model]
    if args.window_tokens is not None:
        command += ["--window-tokens", str(args.window_tokens)]
    env = {k: v for k, v in os.environ.items() if k not in ("CPRS_API_KEY", "CPRS_API_KEY_FILE")}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"cprs serve exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("cprs serve did not get ready in 300 s")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def scrape(url: str) -> dict[str, float]:
    """The unlabelled samples of ``/metrics`` plus ``/v1/compress`` requests counted by status."""
    import httpx

    out: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = re.fullmatch(r"([a-z_]+) ([0-9.e+-]+)", line)
        if match:
            out[match.group(1)] = float(match.group(2))
        match = re.fullmatch(
            r'cprs_http_requests_total\{method="POST",route="/v1/compress",status="(\d+)"\} (\S+)', line
        )
        if match:
            out[f"compress_status_{match.group(1)}"] = float(match.group(2))
    return out


class RssSampler:
    """The server's resident memory, sampled every half second."""

    def __init__(self, pid: int):
        self.pid, self.samples = pid, [rss_mb(pid)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append(rss_mb(self.pid))

    def stop(self) -> dict[str, float] | None:
        self._stop.set()
        self._thread.join()
        samples = [s for s in self.samples if s is not None]
        return {"start": samples[0], "peak": max(samples), "end": samples[-1]} if samples else None


def server_round(url: str, args: argparse.Namespace, jobs: list[tuple[str, str]]) -> dict[str, Any]:
    """One timed round against the running server."""
    from cprs_integrations import RemoteCPRSEngine

    # one client object (one connection pool) per CLIENTS_PER_POOL clients: httpx's pool slows down with hundreds of
    # connections, and the load generator must not be what is measured
    remotes = [
        RemoteCPRSEngine(url, max_retries=0, timeout=args.request_timeout, max_connections=CLIENTS_PER_POOL)
        for _ in range(math.ceil(args.clients / CLIENTS_PER_POOL))
    ]
    before = scrape(url)

    async def phase() -> tuple[Outcomes, float]:
        async def call(client: int, query: str, text: str) -> Any:
            return await remotes[client // CLIENTS_PER_POOL].acompress(query, [text], target_ratio=args.ratio)

        try:
            return await drive(call, jobs, args.clients, args.seconds)
        finally:
            for remote in remotes:
                await remote.aclose()

    outcomes, wall = asyncio.run(phase())
    after = scrape(url)
    counted = sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith("compress_status_"))
    batches = after.get("cprs_engine_batches_total", 0) - before.get("cprs_engine_batches_total", 0)
    windows = after.get("cprs_engine_windows_total", 0) - before.get("cprs_engine_windows_total", 0)
    return {
        **summary(outcomes, wall),
        "server_counted_requests": int(counted),
        "lost_or_duplicated": int(counted) - outcomes.sent,
        "batch_fill_since_start": after.get("cprs_batch_fill_ratio"),
        "forward_passes": int(batches),
        "windows": int(windows),
        "windows_per_pass": round(windows / batches, 2) if batches else None,
    }


def in_process_round(engine: Any, args: argparse.Namespace, jobs: list[tuple[str, str]]) -> dict[str, Any]:
    """One timed round on the engine in this process."""
    before = engine.stats()

    async def call(client: int, query: str, text: str) -> Any:
        return await engine.acompress(query, [text], target_ratio=args.ratio)

    outcomes, wall = asyncio.run(drive(call, jobs, args.clients, args.seconds))
    after = engine.stats()
    batches, windows = after["batches"] - before["batches"], after["windows"] - before["windows"]
    return {
        **summary(outcomes, wall),
        "forward_passes": int(batches),
        "windows": int(windows),
        "windows_per_pass": round(windows / batches, 2) if batches else None,
        "batch_fill": round(windows / (batches * engine.batch_size), 3) if batches else None,
    }


def measure(args: argparse.Namespace, model: str | None, jobs: list[tuple[str, str]]) -> dict[str, Any]:
    """Rounds of server then in-process, interleaved; the best round of each (by throughput) is reported."""
    from cprs_integrations import CPRSEngine, RemoteCPRSEngine

    engine = None
    if not args.no_in_process:
        engine = CPRSEngine.from_pretrained(
            model, device=args.device, window_tokens=args.window_tokens, max_queue_windows=args.queue_windows
        )
        engine.compress(jobs[0][0], [jobs[0][1]], target_ratio=args.ratio)  # warm-up
    rounds: dict[str, list[dict[str, Any]]] = {"server": [], "in_process": []}
    with served(args, model) as (url, process):
        RemoteCPRSEngine(url).compress(jobs[0][0], [jobs[0][1]], target_ratio=args.ratio)  # warm-up
        rss = RssSampler(process.pid)
        for _ in range(args.repeats):
            rounds["server"].append(server_round(url, args, jobs))
            if engine is not None:
                rounds["in_process"].append(in_process_round(engine, args, jobs))
        server_rss = rss.stop()
    out: dict[str, Any] = {}
    for name, done in rounds.items():
        if done:
            out[name] = {
                **max(done, key=lambda r: r["critic_tokens_per_s"]),
                "rounds_critic_tokens_per_s": [r["critic_tokens_per_s"] for r in done],
            }
    out["server"]["server_rss_mb"] = server_rss
    out["server"]["lost_or_duplicated_all_rounds"] = sum(r["lost_or_duplicated"] for r in rounds["server"])
    out["server"]["errors_all_rounds"] = sum(sum(r["errors"].values()) for r in rounds["server"])
    if engine is not None:
        out["server_vs_in_process_throughput"] = round(
            out["server"]["critic_tokens_per_s"] / out["in_process"]["critic_tokens_per_s"], 3
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="critic folder or hub id (default: the embedded critic)")
    parser.add_argument("--tiny", action="store_true", help="the tiny random test critic: measures the server alone")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (default: 64)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per phase (default: 60)")
    parser.add_argument("--ratio", type=float, default=0.2, help="target_ratio of every request (default: 0.2)")
    parser.add_argument("--queue-windows", type=int, default=4096, help="the server's max_queue_windows")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="the server's request time limit")
    parser.add_argument("--device", default="cpu", help="the critic's device, both phases (default: cpu)")
    parser.add_argument("--window-tokens", type=int, default=None, help="window size (default: the critic's)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the best is kept (default: 1)")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process phase")
    parser.add_argument("--out", default=None, help="result file (default: benchmarks/results/load[_tiny].json)")
    args = parser.parse_args()
    set_offline()

    from benchmarks.tasks import hotpot_examples

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.tiny:
            from cprs_integrations.models.testing import save_tiny_encoder_critic

            model = str(Path(scratch) / "tiny-encoder")
            save_tiny_encoder_critic(Path(model), seed=0)
        jobs = [(ex.query, ex.text) for ex in hotpot_examples(min(args.clients, 64))]
        result: dict[str, Any] = {
            "run": run_info(),
            "critic": "tiny random encoder (2 layers, hidden 32)" if args.tiny else (args.model or "embedded default"),
            "clients": args.clients,
            "seconds": args.seconds,
            "distinct_requests": len(jobs),
            "queue_windows": args.queue_windows,
            "repeats": args.repeats,
            "note": "load generator, server and in-process engine share this machine's cores; best of the "
            "interleaved rounds",
            **measure(args, model, jobs),
        }
    name = (
        args.out or RESULTS_DIR / f"load{'_tiny' if args.tiny else ''}{'_overload' if args.no_in_process else ''}.json"
    )
    print(write_json(Path(name), result))
    import json

    print(json.dumps({k: v for k, v in result.items() if k != "run"}, indent=2))


if __name__ == "__main__":
    main()
