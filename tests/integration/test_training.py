"""`cprs train` end to end at tiny scale: real data files, a tiny BERT critic, checkpoints, resume, loading."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cprs_integrations import CPRSEngine
from cprs_integrations.training.trainer import TrainConfig, train


@pytest.fixture
def tiny_config(tiny_encoder_dir: Path) -> TrainConfig:
    return TrainConfig(
        base_model=str(tiny_encoder_dir),
        window_tokens=96,
        batch_windows=2,
        max_steps=4,
        warmup_steps=1,
        hotpot_limit=4,
        synthetic_per_epoch=2,
        threads=1,
        log_every=1,
    )


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(tiny_config: TrainConfig, tmp_path: Path):
    straight = train(tiny_config, tmp_path / "straight")
    stopped = train(tiny_config, tmp_path / "stopped", stop_after_minutes=0.0)
    assert not (stopped / "model.safetensors").exists()  # only the checkpoint and latest/ so far
    assert json.loads((stopped / "latest" / "training_facts.json").read_text())["steps"] == 1
    resumed = train(tiny_config, tmp_path / "stopped", resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    facts = json.loads((resumed / "training_facts.json").read_text())
    assert facts["steps"] == 4 and facts["config"]["hotpot_limit"] == 4


def test_the_trained_critic_loads_in_the_engine_and_a_second_stage_starts_from_it(
    tiny_config: TrainConfig, tmp_path: Path
):
    first = train(tiny_config, tmp_path / "first")
    engine = CPRSEngine.from_pretrained(first, device="cpu", dtype="float32", window_tokens=96)
    [result] = engine.compress("Who wrote it?", ["One sentence here. Another one there."], target_ratio=0.5)
    assert result.compressed_tokens <= result.original_tokens * 0.5
    second = train(replace(tiny_config, init_from=str(first), max_steps=2), tmp_path / "second")
    before, after = _weights(first), _weights(second)
    assert any(not (before[k] == after[k]).all() for k in before)  # it trained on
    with pytest.raises(FileNotFoundError, match="init_from"):
        train(replace(tiny_config, init_from=str(tmp_path / "missing")), tmp_path / "third")


def test_config_files_are_checked(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"seed": 1, "learning_rate": 0.1}))
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_file(path)
    shipped = Path(__file__).parents[2] / "cprs_integrations" / "training" / "configs"
    for config in shipped.glob("*.json"):
        TrainConfig.from_file(config)  # every shipped config is valid


def test_token_types_and_top_layers_come_from_the_model() -> None:
    import numpy as np
    from transformers import (
        BertConfig,
        BertForTokenClassification,
        DistilBertConfig,
        DistilBertForTokenClassification,
        RobertaConfig,
        RobertaForTokenClassification,
    )

    from cprs_integrations.models.encoder import uses_token_types
    from cprs_integrations.training.trainer import WindowRecord, collate, top_layer_prefixes

    small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100}
    bert = BertForTokenClassification(BertConfig(num_hidden_layers=3, num_labels=4, **small))
    roberta = RobertaForTokenClassification(
        RobertaConfig(num_hidden_layers=3, num_labels=4, type_vocab_size=1, **small)
    )
    distil = DistilBertForTokenClassification(
        DistilBertConfig(n_layers=3, dim=32, n_heads=2, hidden_dim=64, vocab_size=100, num_labels=4)
    )
    assert uses_token_types(bert.config) and not uses_token_types(roberta.config)
    assert not uses_token_types(distil.config)
    assert top_layer_prefixes(bert, 2) == ("bert.encoder.layer.1.", "bert.encoder.layer.2.")
    assert top_layer_prefixes(roberta, 1) == ("roberta.encoder.layer.2.",)
    assert top_layer_prefixes(distil, 1) == ("distilbert.transformer.layer.2.",)

    record = WindowRecord(
        head=[1, 5, 2],
        tail=[2],
        ids=np.array([7, 8, 9]),
        tags=np.array([2, 0, 3]),
        unit_of_token=np.array([0, 0, 0]),
        unit_labels=np.array([1.0], dtype=np.float32),
    )
    assert "token_type_ids" in collate([record], 0, token_types=True)
    batch = collate([record], 0, token_types=False)
    assert "token_type_ids" not in batch
    roberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # runs without token types


def test_a_missing_device_is_an_error_before_anything_is_written(tiny_config: TrainConfig, tmp_path: Path, capsys):
    import torch

    from cprs_integrations.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: asking for it is not an error here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(replace(tiny_config, device="cuda"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        train(replace(tiny_config, device="tpu"), tmp_path / "run")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"seed": 1, "max_steps": 1}))
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "cli"), "--device", "cuda:0"]) == 2
    assert "cuda:0" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    from cprs_integrations.training.fine_tune import fine_tune_config

    with pytest.raises(ValueError, match="CUDA is not available"):  # before the (missing) records are read
        fine_tune_config(tmp_path / "missing.jsonl", device="cuda")


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")
def test_training_on_cuda_resumes_like_an_uninterrupted_run(tiny_config: TrainConfig, tmp_path: Path):
    # Runs on a machine with CUDA (python -m pytest -k cuda there); a CPU machine skips it.
    import torch

    config = replace(tiny_config, device="cuda", bf16=True)
    straight = train(config, tmp_path / "straight")
    train(config, tmp_path / "stopped", stop_after_minutes=0.0)
    resumed = train(config, tmp_path / "stopped", resume=True)
    a, b = _weights(straight), _weights(resumed)
    # CUDA's index_add sums in no fixed order: equal up to about one bf16 rounding step
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-2, atol=1e-2) for k in a)
    engine = CPRSEngine.from_pretrained(straight, device="cpu", dtype="float32", window_tokens=96)
    [result] = engine.compress("Who wrote it?", ["One sentence here. Another one there."], target_ratio=0.5)
    assert result.compressed_tokens <= result.original_tokens * 0.5
