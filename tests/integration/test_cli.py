"""The command line: flags from the options, input files handled, outputs (text, JSON, HTML), clear errors."""

from __future__ import annotations

import json
import math

import pytest

from cprs_integrations import __version__
from cprs_integrations.cli import build_parser, main


def run(tiny_encoder_dir, *args: str) -> int:
    return main(["compress", "--model", str(tiny_encoder_dir), "--device", "cpu", "--dtype", "float32", *args])


def test_several_files_get_headers_stats_and_an_html_view(tiny_encoder_dir, tmp_path, capsys, long_text):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(long_text[:2000], encoding="utf-8")
    b.write_text(long_text[2000:4000], encoding="utf-8")
    page = tmp_path / "view.html"
    assert run(tiny_encoder_dir, "--query", "What?", "--ratio", "0.3", "--html", str(page), str(a), str(b)) == 0
    captured = capsys.readouterr()
    assert f"==> {a} <==" in captured.out and f"==> {b} <==" in captured.out
    assert captured.err.count("tokens (") == 2 and f"cprs: {a}:" in captured.err
    assert "<mark" in page.read_text(encoding="utf-8") and str(b) in page.read_text(encoding="utf-8")


def test_a_byte_order_mark_is_dropped_and_offsets_count_from_the_text(tiny_encoder_dir, tmp_path, capsys):
    doc = tmp_path / "bom.txt"
    text = "Tallow Bay has a rowing club. It trains every morning."
    doc.write_bytes("\ufeff".encode() + text.encode("utf-8"))
    assert run(tiny_encoder_dir, "--query", "rowing", "--ratio", "1.0", "--json", str(doc)) == 0
    [out] = json.loads(capsys.readouterr().out)
    assert out["text"] == text and out["spans"][0]["start"] == 0 and out["spans"][-1]["end"] == len(text)


def test_other_encodings_with_encoding_flag(tiny_encoder_dir, tmp_path, capsys):
    doc = tmp_path / "latin.txt"
    doc.write_bytes("Café Zürich serves crêpes. The river flows.".encode("latin-1"))
    assert run(tiny_encoder_dir, "--query", "crêpes", str(doc)) == 2
    err = capsys.readouterr().err
    assert f"{doc} is not valid utf-8" in err and "--encoding" in err
    assert run(tiny_encoder_dir, "--query", "crêpes", "--encoding", "latin-1", "--ratio", "1.0", str(doc)) == 0
    assert "Café Zürich" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ratio", "0.1", "--tokens", "50"], "not both"),
        (["--mode", "tags", "--ratio", "0.2"], "has no budget"),
        (["--score-threshold", "1.5"], "score_threshold"),
        (["--lexical-weight", "-1"], "lexical_weight"),
    ],
)
def test_conflicting_or_bad_flags_are_errors(tiny_encoder_dir, tmp_path, capsys, flags, message):
    doc = tmp_path / "doc.txt"
    doc.write_text("Some text.", encoding="utf-8")
    assert run(tiny_encoder_dir, "--query", "q", *flags, str(doc)) == 2
    assert message in capsys.readouterr().err


def test_a_folder_or_a_missing_file_is_named(tiny_encoder_dir, tmp_path, capsys):
    assert run(tiny_encoder_dir, "--query", "q", str(tmp_path)) == 2
    assert "is a folder" in capsys.readouterr().err
    assert run(tiny_encoder_dir, "--query", "q", str(tmp_path / "nope.txt")) == 2
    assert "no such file" in capsys.readouterr().err


def test_every_option_reaches_the_engine_and_the_default_budget_is_a_fifth(tiny_encoder_dir, tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text(" ".join(f"Sentence {i} is about the weather." for i in range(60)), encoding="utf-8")
    assert run(tiny_encoder_dir, "--query", "weather", "--separator", " | ", "--json", str(doc)) == 0
    [out] = json.loads(capsys.readouterr().out)
    budget = math.floor(0.2 * out["original_tokens"] + 1e-9)
    assert 0.9 * budget <= out["compressed_tokens"] <= budget
    assert (
        run(tiny_encoder_dir, "--query", "weather", "--granularity", "token", "--tokens", "9", "--json", str(doc)) == 0
    )
    [out] = json.loads(capsys.readouterr().out)
    assert out["granularity"] == "token" and out["compressed_tokens"] <= 9


def test_version_and_help_on_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        for flag in action._actions:
            assert flag.help, f"{action.prog} {flag.option_strings or flag.dest} has no help"
