"""`cprs train --data` and `cprs eval --data` at tiny scale: the tiny BERT critic, a few steps, a small file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cprs_integrations import CPRSEngine
from cprs_integrations.cli import main

PRODUCTS = ["kettle", "toaster", "blender", "heater", "lamp", "fan"]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    """24 records, both forms, one negative example."""
    lines = []
    for i in range(24):
        product = PRODUCTS[i % len(PRODUCTS)]
        sentences = [
            f"The {product} model {i} comes in three colours.",
            f"Its warranty covers {i % 5 + 1} years of normal use.",
            "Shipping takes about a week in most regions.",
            f"The {product} draws {100 + i} watts at full power.",
        ]
        answer = 1 if i % 2 else 3
        if i % 3:
            record = {"id": i, "query": f"How long is the {product} covered?", "sentences": sentences}
            record["keep_sentences"] = [answer] if i != 5 else []
        else:
            context = " ".join(sentences)
            start = context.index(sentences[answer])
            record = {"id": i, "query": f"How much power does the {product} use?", "context": context}
            record["keep"] = [[start, start + len(sentences[answer])]]
        lines.append(json.dumps(record))
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train_args(data: Path, output: Path, tiny: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--output",
        str(output),
        "--init-from",
        str(tiny),
        "--epochs",
        "1",
        "--holdout",
        "0.25",
        "--threads",
        "1",
        *extra,
    ]


def test_train_on_data_saves_a_critic_that_loads_and_reports_on_the_held_out_records(
    data_file: Path, tiny_encoder_dir: Path, tmp_path: Path, capsys
):
    output = tmp_path / "run"
    assert main(train_args(data_file, output, tiny_encoder_dir)) == 0
    printed = capsys.readouterr().out
    assert "held-out records" in printed and "before" in printed and "after" in printed and "bm25" in printed
    report = json.loads((output / "heldout_report.json").read_text())
    assert report["finished"] and report["heldout"] >= 1 and report["critic"] == str(output)
    for name in ("before", "after"):
        rows = report[name]["ratios"]
        assert [row["ratio"] for row in rows] == [0.1, 0.2, 0.3]
        assert all(0.0 <= row[k] <= 1.0 for row in rows for k in ("critic", "bm25"))
    run_config = json.loads((output / "run_config.json").read_text())
    assert run_config["data"] == str(data_file.resolve()) and len(run_config["data_sha256"]) == 64
    assert run_config["init_from"] == str(tiny_encoder_dir.resolve()) and run_config["window_tokens"] == 128
    engine = CPRSEngine.from_pretrained(output, device="cpu", dtype="float32")
    [result] = engine.compress("How long is the fan covered?", ["The fan is blue. Its warranty covers two years."])
    assert result.original_tokens > 0


def test_resume_refuses_a_changed_data_file_and_continues_with_the_same_one(
    data_file: Path, tiny_encoder_dir: Path, tmp_path: Path, capsys
):
    output = tmp_path / "run"
    assert main(train_args(data_file, output, tiny_encoder_dir, "--stop-after-minutes", "0")) == 0
    assert "stopped early" in capsys.readouterr().out
    original = data_file.read_bytes()
    data_file.write_bytes(original.replace(b"three colours", b"seven colours", 1))  # same length: spans stay
    assert main(train_args(data_file, output, tiny_encoder_dir, "--resume")) == 2
    assert "changed since the run started" in capsys.readouterr().err
    data_file.write_bytes(original)
    assert main(train_args(data_file, output, tiny_encoder_dir, "--resume")) == 0
    assert json.loads((output / "heldout_report.json").read_text())["finished"]


def test_eval_prints_a_table_and_json_with_bm25_next_to_the_critic(data_file: Path, tiny_encoder_dir: Path, capsys):
    common = ["eval", "--data", str(data_file), "--model", str(tiny_encoder_dir), "--device", "cpu", "--threads", "1"]
    assert main([*common, "--dtype", "float32", "--ratios", "0.1", "0.3"]) == 0
    table = capsys.readouterr().out
    assert "24 records, 23 spans" in table and "bm25" in table and "score_threshold" in table
    assert main([*common, "--dtype", "float32", "--ratios", "0.1", "0.3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 24 and report["spans"] == 23
    assert [row["ratio"] for row in report["ratios"]] == [0.1, 0.3]
    assert all(0.0 <= row[k] <= 1.0 for row in report["ratios"] for k in ("critic", "bm25"))
    threshold = report["threshold"]
    assert threshold["score_threshold"] is None or (
        0.0 <= threshold["score_threshold"] <= 1.0 and threshold["recall"] >= 0.9
    )


def test_bad_records_and_flags_are_clear_errors_before_any_model_loads(data_file: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data_file.read_text().splitlines()[0] + '\n{"query": "q", "context": "abc", "keep": [[2, 9]]}\n')
    assert main(["eval", "--data", str(bad), "--model", str(tmp_path / "no-model")]) == 2
    assert f"{bad} line 2: keep[0] = [2, 9]: end is past the end of context" in capsys.readouterr().err
    assert main(["train", "--data", str(bad), "--output", str(tmp_path / "out")]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["eval", "--data", str(data_file), "--model", str(tmp_path / "no-model"), "--ratios", "1.5"]) == 2
    assert "target_ratio" in capsys.readouterr().err
    config = Path(__file__).parents[2] / "cprs_integrations" / "training" / "configs" / "default.json"
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "o"), "--epochs", "2"]) == 2
    assert "--epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--config", str(config), "--data", str(bad), "--output", str(tmp_path / "o")])
