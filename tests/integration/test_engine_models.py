"""The engine on tiny random critics saved in the real file layout and loaded through the public loader."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from cprs_integrations import CPRSEngine
from cprs_integrations.cli import main as cli_main
from cprs_integrations.engine.registry import clear_shared_engines
from cprs_integrations.models.decoder import DecoderCritic
from cprs_integrations.models.encoder import EncoderCritic


def test_encoder_engine_compresses_long_text_into_exact_slices(tiny_engine, long_text):
    [res] = tiny_engine.compress("What did the founders do?", [long_text], target_ratio=0.1)
    assert isinstance(tiny_engine.critic, EncoderCritic)
    assert res.timings["windows"] > 10  # 64-token windows over ~2K tokens
    assert 0 < res.compressed_tokens <= math.floor(0.1 * res.original_tokens + 1e-9)
    assert all(long_text[s.start : s.end] == t for s, t in zip(res.spans, res.span_texts))


def test_decoder_engine_uses_the_official_layout(tiny_decoder_dir, long_text):
    engine = CPRSEngine.from_pretrained(tiny_decoder_dir, device="cpu", dtype="float32", window_tokens=512)
    assert isinstance(engine.critic, DecoderCritic)
    [res] = engine.compress("Who?", [long_text[:3000]], granularity="paragraph", target_ratio=0.3)
    assert res.compressed_tokens <= math.floor(0.3 * res.original_tokens + 1e-9)
    [tags] = engine.compress("Who?", [long_text[:3000]], mode="tags")
    assert all(0 <= s.start < s.end <= 3000 for s in tags.spans)


def test_scores_do_not_depend_on_batch_composition(tiny_encoder_dir, long_text):
    one = CPRSEngine.from_pretrained(tiny_encoder_dir, device="cpu", dtype="float32", window_tokens=64, batch_size=1)
    many = CPRSEngine.from_pretrained(tiny_encoder_dir, device="cpu", dtype="float32", window_tokens=64, batch_size=16)
    a = one.score("query", [long_text[:2000], long_text[2000:2600]])
    b = many.score("query", [long_text[:2000], long_text[2000:2600]])
    for x, y in zip(a, b):
        assert x.probs.shape == y.probs.shape
        assert abs(x.probs - y.probs).max() < 1e-4


def test_shared_engine_loads_once_per_settings(tiny_encoder_dir):
    clear_shared_engines()
    a = CPRSEngine.shared(tiny_encoder_dir, device="cpu", window_tokens=64)
    b = CPRSEngine.shared(str(tiny_encoder_dir), device="cpu", window_tokens=64)
    c = CPRSEngine.shared(tiny_encoder_dir, device="cpu", window_tokens=96)
    assert a is b and a is not c
    clear_shared_engines()


def test_folder_that_is_not_a_critic_is_refused(tmp_path, tiny_encoder_dir):
    folder = tmp_path / "plain-bert"
    shutil.copytree(tiny_encoder_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "NEG", "1": "POS"}
    config["label2id"] = {"NEG": 0, "POS": 1}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not a CPRS critic"):
        CPRSEngine.from_pretrained(folder, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a CPRS critic"):
        CPRSEngine.from_pretrained(empty, device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CPRSEngine.from_pretrained(tmp_path / "missing" / "critic", device="cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "cuda"}, "not available"),
        ({"device": "tpu"}, "device"),
        ({"device": "cpu", "dtype": "float8"}, "dtype"),
        ({"device": "cpu", "bidirectional_from": 2}, "decoder critics only"),
        ({"device": "cpu", "window_tokens": 4096}, "window_tokens"),
    ],
)
def test_loader_errors_name_the_value(tiny_encoder_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CPRSEngine.from_pretrained(tiny_encoder_dir, **kwargs)


def test_cli_compress_prints_json(tiny_encoder_dir, tmp_path, capsys, long_text):
    doc = tmp_path / "doc.txt"
    doc.write_text(long_text[:3000], encoding="utf-8")
    code = cli_main(
        [
            "compress",
            "--model",
            str(tiny_encoder_dir),
            "--device",
            "cpu",
            "--query",
            "What?",
            "--ratio",
            "0.2",
            "--json",
            str(doc),
        ]
    )
    assert code == 0
    [out] = json.loads(capsys.readouterr().out)
    assert out["file"] == str(doc) and out["compressed_tokens"] <= math.floor(0.2 * out["original_tokens"] + 1e-9)


def test_cli_reports_bad_input_without_a_traceback(tiny_encoder_dir, tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text("Some text.", encoding="utf-8")
    code = cli_main(["compress", "--model", str(tiny_encoder_dir), "--query", "q", "--ratio", "2", str(doc)])
    assert code == 2
    assert "target_ratio" in capsys.readouterr().err


def test_default_critic_folder_is_complete():
    from cprs_integrations.models.loading import DEFAULT_CRITIC_DIR

    names = {p.name for p in Path(DEFAULT_CRITIC_DIR).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names


def test_shared_engine_key_fills_in_defaults_and_register_shared(tiny_encoder_dir):
    clear_shared_engines()
    a = CPRSEngine.shared(tiny_encoder_dir, device="cpu")
    assert CPRSEngine.shared(tiny_encoder_dir, device="cpu", dtype="auto", window_tokens=None) is a
    with pytest.raises(TypeError):
        CPRSEngine.shared(tiny_encoder_dir, no_such_option=1)
    a.register_shared()
    assert CPRSEngine.shared() is a
    clear_shared_engines()


def test_shared_engine_key_resolves_device_and_dtype(tiny_encoder_dir):
    import torch

    from cprs_integrations.models.devices import resolve_dtype

    clear_shared_engines()
    implicit = CPRSEngine.shared(tiny_encoder_dir)
    if not torch.cuda.is_available():  # None resolves to the CPU here: the same engine, loaded once
        assert CPRSEngine.shared(tiny_encoder_dir, device="cpu") is implicit
        explicit_dtype = str(resolve_dtype("auto", "cpu")).removeprefix("torch.")
        assert CPRSEngine.shared(tiny_encoder_dir, device="cpu", dtype=explicit_dtype) is implicit
    clear_shared_engines()
