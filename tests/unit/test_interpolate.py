"""WiSE-FT weight interpolation of two critic folders (cprs_integrations/training/interpolate.py)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file, save_file  # noqa: E402

from cprs_integrations.training.interpolate import interpolate, main  # noqa: E402


def critic(folder, weight: float, extra: str | None = None):
    folder.mkdir()
    tensors = {"w": torch.full((2, 3), weight, dtype=torch.bfloat16), "ids": torch.arange(4)}
    if extra:
        tensors[extra] = torch.zeros(1)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    (folder / "training_facts.json").write_text(json.dumps({"steps": 3}))
    return folder


def test_mixes_each_float_tensor_and_keeps_the_rest(tmp_path):
    base, tuned = critic(tmp_path / "a", 1.0), critic(tmp_path / "b", 3.0)
    out = interpolate(base, tuned, 0.25, tmp_path / "mix")
    mixed = load_file(str(out / "model.safetensors"))
    assert mixed["w"].dtype == torch.bfloat16 and torch.all(mixed["w"] == 1.5)
    assert torch.equal(mixed["ids"], torch.arange(4))
    assert (out / "config.json").is_file()
    facts = json.loads((out / "training_facts.json").read_text())
    assert facts["steps"] == 3 and facts["interpolation"]["alpha"] == 0.25
    assert torch.all(load_file(str(tuned / "model.safetensors"))["w"] == 3.0)  # inputs untouched


def test_ends_are_the_critics(tmp_path):
    base, tuned = critic(tmp_path / "a", 1.0), critic(tmp_path / "b", 3.0)
    main([str(base), str(tuned), "--alpha", "0", "--output", str(tmp_path / "zero")])
    assert torch.all(load_file(str(tmp_path / "zero" / "model.safetensors"))["w"] == 1.0)
    assert torch.all(load_file(str(interpolate(base, tuned, 1.0, tmp_path / "one") / "model.safetensors"))["w"] == 3)


def test_bad_input_names_the_value(tmp_path):
    base, tuned = critic(tmp_path / "a", 1.0), critic(tmp_path / "b", 3.0, extra="head.bias")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        interpolate(base, tuned, 1.5, tmp_path / "x")
    with pytest.raises(ValueError, match=r"head\.bias"):
        interpolate(base, tuned, 0.5, tmp_path / "x")
    with pytest.raises(ValueError, match="exists"):
        interpolate(base, base, 0.5, tuned)
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        interpolate(tmp_path, base, 0.5, tmp_path / "y")
    assert not (tmp_path / "x").exists()
