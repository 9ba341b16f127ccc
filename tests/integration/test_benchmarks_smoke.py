"""Smoke test of the benchmarks' code path: quick quality run on a tiny random critic, one speed point, the report.

Figures are not asserted (a random critic and two examples say nothing); only the structure of the JSON and that
every rate lies in [0, 1]. LongLLMLingua is left out (loading its scoring LM alone takes longer than this test).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TASKS = ("hotpotqa", "needle", "multikey", "variable_tracking", "squad")
#: The benchmark peers and plots come with `bash scripts/setup_bench.sh` (the `bench` extra), not with the test
#: set-up: without them, the methods that need no peer package still run here, and the report is skipped.
HAVE_PEERS = all(importlib.util.find_spec(name) for name in ("matplotlib", "langchain_community"))
METHODS = (
    "ours",
    "ours-sentence",
    "ours-paragraph",
    "ours-chunk",
    "ours-tags",
    "ours+bm25",
    "bm25",
    "minilm-cosine",
    "llamaindex-sentence-optimizer",
    "rag",
    "random",
) + (("langchain-embeddings-filter",) if HAVE_PEERS else ())
NO_PEERS = "benchmark peers and plots not installed: bash scripts/setup_bench.sh"


def _run(*args: str, timeout: int = 600) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _in_unit_interval(value: object) -> bool:
    return isinstance(value, (int, float)) and 0.0 <= value <= 1.0


@pytest.fixture(scope="module")
def results(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    _run(
        "benchmarks.quality",
        "--quick",
        "--limit=2",
        "--needle-lengths=600",
        "--context-tokens=800",
        "--threads=1",
        f"--model={tiny_encoder_dir}",
        f"--methods={','.join(METHODS)}",
        f"--out={folder / 'quality-quick.json'}",
    )
    _run(
        "benchmarks.speed",
        "--methods=ours",
        "--lengths=512",
        "--threads=1",
        f"--model={tiny_encoder_dir}",
        f"--out={folder / 'speed-quick.json'}",
    )
    _run(  # a second run adds its points to the same file
        "benchmarks.speed",
        "--methods=bm25",
        "--lengths=512,1024",
        "--threads=1",
        f"--model={tiny_encoder_dir}",
        f"--out={folder / 'speed-quick.json'}",
        "--extend",
    )
    if HAVE_PEERS:
        _run("benchmarks.report", "--quick", f"--results={folder}")
    return folder


def test_quality_json_structure(results: Path) -> None:
    data = json.loads((results / "quality-quick.json").read_text(encoding="utf-8"))
    assert data["quick"] is True
    assert {"cpu", "cores", "torch_threads"} <= set(data["machine"])
    assert set(data["tasks"]) == set(TASKS)
    for task, entry in data["tasks"].items():
        assert entry["n_examples"] == 2, task
        assert set(entry["methods"]) == set(METHODS), task
        for name, method in entry["methods"].items():
            assert "error" not in method, (task, name, method.get("error"))
            expected = {"tags"} if name == "ours-tags" else set(entry["budgets"])
            assert set(method["results"]) == expected, (task, name)
            for label, result in method["results"].items():
                assert result["n"] == 2
                assert set(result["metrics"]) == set(entry["metrics"])
                assert all(_in_unit_interval(v) for v in result["metrics"].values()), (task, name, label, result)
                assert _in_unit_interval(result["kept_share"]), (task, name, label)
                if label != "tags":
                    assert result["over_budget"] == 0.0, (task, name, label)
    heatmaps = data["tasks"]["needle"]["heatmaps"]
    grid = heatmaps["methods"]["ours-sentence"]["50x"]
    assert len(grid) == len(heatmaps["lengths"]) and all(len(row) == len(heatmaps["depths"]) for row in grid)
    assert all(v is None or _in_unit_interval(v) for row in grid for v in row)


def test_speed_points_and_extend(results: Path) -> None:
    speed = json.loads((results / "speed-quick.json").read_text(encoding="utf-8"))
    assert [(p["method"], p["tokens"]) for p in speed["points"]] == [("ours", 512), ("bm25", 512), ("bm25", 1024)]
    for point in speed["points"]:
        assert "error" not in point, point
        assert point["seconds"] > 0 and point["memory_mb"] >= 0
    assert speed["lengths"] == [512, 1024] and len(speed["runs"]) == 2
    assert "--extend" in speed["runs"][1]["command"] and "--extend" not in speed["runs"][0]["command"]


@pytest.mark.skipif(not HAVE_PEERS, reason=NO_PEERS)
def test_report(results: Path) -> None:
    assert (results / "RESULTS-quick.md").is_file()
    assert (results / "quality_hotpotqa-quick.png").stat().st_size > 0
    assert (results / "needle_heatmap-quick.png").stat().st_size > 0
    assert (results / "speed_throughput-quick.png").stat().st_size > 0


def test_coarse_filter_signals(tmp_path: Path) -> None:
    out = tmp_path / "coarse.json"
    _run("benchmarks.coarse_filter", "--quick", "--sections", "signals", f"--out={out}")
    signals = json.loads(out.read_text(encoding="utf-8"))["signals"]
    assert set(signals) == {"needle", "paraphrase", "variable_chain", "hotpot_hidden", "unshared"}
    for task, entry in signals.items():
        assert entry["n"] > 0
        for key in ("bm25", "embedding", "fused", "filter"):
            assert _in_unit_interval(entry[f"{key} 10x"]) and _in_unit_interval(entry[f"{key} 50x"]), (task, key)


def test_kept_tests_and_order_recovery() -> None:
    """The pieces the figures rest on: the 90%-of-characters test, the text test, the LlamaIndex order decoding."""
    import numpy as np

    if str(REPO) not in sys.path:  # benchmarks/ is a folder at the repository root, not part of the package
        sys.path.insert(0, str(REPO))
    from benchmarks.metrics import Output, covered_share, span_kept
    from benchmarks.peers import recover_order
    from benchmarks.tasks import plain_example

    kept = np.array([[0, 10], [20, 30]])
    assert covered_share((0, 10), kept) == 1.0
    assert covered_share((5, 25), kept) == 0.5
    example = plain_example("squad", "x", "q?", "Alpha beta.  Gamma\ndelta. Eps.")
    assert span_kept(example, Output("x Gamma delta. y", None, 3), (13, 25))
    assert not span_kept(example, Output("Gamma", None, 1), (13, 25))
    sentences = ["A b.", "A b. C", "Same.", "Same.", "Z"]
    order = [3, 1, 4, 0, 2]
    recovered = recover_order(" ".join(sentences[i] for i in order), sentences)
    assert [sentences[i] for i in recovered] == [sentences[i] for i in order]
    assert sorted(recovered) == list(range(len(sentences)))
