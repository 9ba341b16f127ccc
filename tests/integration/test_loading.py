"""Loading a critic: broken folders are refused before any weight is allocated, paths and devices are checked,
and loading is quiet. Every case builds a tiny critic (or a broken copy of one) in a tmp folder."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cprs_integrations import CPRSEngine
from cprs_integrations.models.checkpoint import looks_like_path
from cprs_integrations.models.decoder import DecoderCritic, Qwen2CriticModel
from cprs_integrations.models.devices import resolve_device
from cprs_integrations.models.encoder import EncoderCritic
from cprs_integrations.models.loading import load_critic
from cprs_integrations.models.progress import no_progress_bars
from cprs_integrations.models.testing import qwen_tokenizer_dir, save_tiny_decoder_critic, save_tiny_encoder_critic

Tensors = dict[str, torch.Tensor]


def _broken_copy(
    source: Path,
    target: Path,
    *,
    weights: Callable[[Tensors], Tensors] | None = None,
    config: dict | None = None,
    without: tuple[str, ...] = (),
) -> Path:
    """A copy of a critic folder with its weights filtered, its config changed (``None`` drops a key) or some files
    left out."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*without) if without else None)
    if weights is not None:
        file = target / "model.safetensors"
        save_file(weights(load_file(file)), file, metadata={"format": "pt"})
    if config is not None:
        file = target / "config.json"
        changed = {**json.loads(file.read_text()), **config}
        file.write_text(json.dumps({k: v for k, v in changed.items() if v is not None}))
    return target


def _drop(pattern: str) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {k: v for k, v in tensors.items() if not re.search(pattern, k)}


def _refused(folder: Path, match: str) -> str:
    """Load through the public loader; the error must name the folder and match ``match``."""
    with pytest.raises(ValueError, match=match) as caught:
        load_critic(folder, device="cpu", dtype="float32")
    assert str(folder) in str(caught.value)
    return str(caught.value)


# ------------------------------------------------------------------------------------------- encoder weights


def test_encoder_without_classifier_head_is_not_a_critic(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "nohead", weights=_drop(r"^classifier\."))
    message = _refused(folder, "not a CPRS critic")
    assert "classifier.weight [4, 32]" in message and "classifier.bias [4]" in message


def test_encoder_with_a_layer_missing_is_refused(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "onelayer", weights=_drop(r"\.layer\.1\."))
    _refused(folder, "config.json describes 2 layers but the weights hold 1")


def test_encoder_with_one_tensor_missing_is_refused(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(
        tiny_encoder_dir, tmp_path / "noquery", weights=_drop(r"layer\.0\.attention\.self\.query\.weight")
    )
    message = _refused(folder, "lack 1 tensor")
    assert "bert.encoder.layer.0.attention.self.query.weight" in message


@pytest.mark.parametrize(("config_layers", "found"), [(12, 2), (1, 2)])
def test_encoder_config_and_weights_of_different_depth_are_refused(
    tiny_encoder_dir: Path, tmp_path: Path, config_layers: int, found: int
) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "depth", config={"num_hidden_layers": config_layers})
    _refused(folder, f"describes {config_layers} layers but the weights hold {found}")


def test_encoder_with_other_shapes_than_its_config_is_refused(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "wide", config={"intermediate_size": 128})
    message = _refused(folder, "other shapes than config.json implies")
    assert "[64, 32] in the weights, [128, 32] from config.json" in message


def test_pickle_weights_are_named_and_never_loaded(
    tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "pickle", without=("*.safetensors",))
    (folder / "pytorch_model.bin").write_bytes(b"not even a pickle")

    def no_pickles(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_pickles)
    _refused(folder, r"no model\.safetensors.*pytorch_model\.bin is a pickle file, never loaded")


def test_unreadable_safetensors_is_refused(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "garbled", without=("*.safetensors",))
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    _refused(folder, "model.safetensors is not a readable safetensors file")


# ------------------------------------------------------------------------------------------ encoder tokenizer


def test_folder_without_tokenizer_files_is_refused(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "notok", without=("tokenizer*", "vocab.txt", "special*"))
    _refused(folder, "has no tokenizer files: expected one of tokenizer.json, vocab.txt")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "tokenizer.json is empty"),
        ("\n  \n", "tokenizer.json is empty"),
        ("version: 1\n", "tokenizer.json is not a JSON object"),
        ("{ truncated", "tokenizer files could not be read"),
        ("{}", "tokenizer files could not be read"),
    ],
)
def test_broken_tokenizer_json_is_refused(tiny_encoder_dir: Path, tmp_path: Path, content: str, match: str) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "badtok")
    (folder / "tokenizer.json").write_text(content)
    _refused(folder, match)


def test_tokenizer_that_knows_only_special_tokens_is_refused(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "tinyvocab", without=("tokenizer.json",))
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    _refused(folder, r"maps every word to \[UNK\]")


def test_tokenizer_larger_than_the_embedding_table_is_refused(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(tiny_encoder_dir, tmp_path / "smallvocab")
    tensors = load_file(folder / "model.safetensors")
    tensors["bert.embeddings.word_embeddings.weight"] = tensors["bert.embeddings.word_embeddings.weight"][:1000]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    _broken_copy(folder, tmp_path / "smallvocab2", config={"vocab_size": 1000})
    _refused(tmp_path / "smallvocab2", "tokenizer has 30522 entries but config.json's vocab_size is 1000")


# ------------------------------------------------------------------------------------------- decoder weights


def test_decoder_with_a_layer_missing_is_refused(tiny_decoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(tiny_decoder_dir, tmp_path / "threelayers", weights=_drop(r"^model\.layers\.3\."))
    _refused(folder, "config.json describes 4 layers but the weights hold 3")


def test_decoder_with_other_shapes_than_its_config_is_refused(tiny_decoder_dir: Path, tmp_path: Path) -> None:
    folder = _broken_copy(tiny_decoder_dir, tmp_path / "wide", config={"intermediate_size": 128})
    _refused(folder, r"other shapes than config.json implies \(model\.layers\.0\.mlp\.down_proj\.weight")


def test_huge_config_next_to_a_head_only_checkpoint_fails_before_allocating(
    tiny_decoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~150B parameters (about 600 GB in float32): allocating any of it would take minutes or kill the process.
    huge = {
        "num_hidden_layers": 48,
        "hidden_size": 16384,
        "intermediate_size": 53248,
        "num_attention_heads": 128,
        "num_key_value_heads": 8,
        "cprs_bidirectional_from": 40,
        "layer_types": None,  # one entry per layer; transformers fills it in again
    }
    folder = _broken_copy(tiny_decoder_dir, tmp_path / "huge", config=huge, without=("*.safetensors",))
    head = {"cls_head.weight": torch.zeros(4, 16384), "cls_head.bias": torch.zeros(4)}
    save_file(head, folder / "model.safetensors", metadata={"format": "pt"})

    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded before its checkpoint was checked")

    monkeypatch.setattr(Qwen2CriticModel, "from_pretrained", never)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    message = _refused(folder, "config.json describes 48 layers but the weights hold 0")
    elapsed = time.perf_counter() - started
    peak_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert "not a CPRS critic" not in message  # the head is there; the backbone is what is missing
    # Loose guards (measured ~0.1 s and no growth): the point is that nothing of the 600 GB was touched.
    assert elapsed < 5.0
    assert peak_growth_mib < 512


# ------------------------------------------------------------------------------------------------------ paths


def test_relative_path_that_does_not_exist_is_no_such_folder(
    tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for where in ("models/critic", "./models/critic", "models/critic/", "a/b/c", "~/no-such-cprs-critic-dir"):
        with pytest.raises(FileNotFoundError, match="no such folder") as caught:
            load_critic(where, device="cpu")
        assert os.path.expanduser(where) in str(caught.value)
        assert "not a CPRS critic" not in str(caught.value)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        EncoderCritic.from_pretrained("models/critic")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        DecoderCritic.from_pretrained("./models/critic")
    # The same relative name loads once the folder is there.
    shutil.copytree(tiny_encoder_dir, tmp_path / "models" / "critic")
    assert isinstance(load_critic("models/critic", device="cpu"), EncoderCritic)


def test_a_file_is_not_a_critic_folder(tiny_encoder_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is a file; pass the critic's folder"):
        load_critic(tiny_encoder_dir / "config.json", device="cpu")


@pytest.mark.parametrize(
    ("where", "is_path"),
    [
        ("org/name", False),
        ("name", False),
        ("./critic", True),
        ("../critic", True),
        ("~/critic", True),
        ("/abs/critic", True),
        ("models\\critic", True),
        ("a/b/c", True),
    ],
)
def test_hub_ids_are_told_from_paths(where: str, is_path: bool) -> None:
    assert looks_like_path(where) is is_path


# ---------------------------------------------------------------------------------------------------- devices


@pytest.mark.parametrize("device", ["cpu:7", "cpu:0", "mps:1", "cuda:x", "cuda:-1", "cuda: 1", "gpu", "CUDA", "xpu"])
def test_malformed_devices_are_refused_with_the_allowed_forms(device: str) -> None:
    with pytest.raises(ValueError, match=re.escape("expected 'cpu', 'cuda', 'cuda:N' or 'mps'")):
        resolve_device(device)


def test_cpu_with_an_index_is_refused_by_the_loaders(tiny_encoder_dir: Path, tiny_decoder_dir: Path) -> None:
    with pytest.raises(ValueError, match="only CUDA devices take"):
        load_critic(tiny_encoder_dir, device="cpu:7")
    with pytest.raises(ValueError, match="only CUDA devices take"):
        DecoderCritic.from_pretrained(tiny_decoder_dir, device="cpu:7")
    assert resolve_device(torch.device("cpu")) == "cpu"


# ----------------------------------------------------------------------------------------- device and device_map


def test_decoder_device_defaults_to_none_and_works_with_a_device_map(tiny_decoder_dir: Path) -> None:
    pytest.importorskip("accelerate")
    expected = resolve_device(None)
    assert DecoderCritic.from_pretrained(tiny_decoder_dir, dtype=torch.float32).device.startswith(expected)
    mapped = DecoderCritic.from_pretrained(tiny_decoder_dir, device_map="auto", dtype=torch.float32)
    assert mapped.device in {"cpu", "auto"} or mapped.device.startswith("cuda")
    engine = CPRSEngine.from_pretrained(tiny_decoder_dir, device_map={"": "cpu"}, dtype="float32")
    assert engine.critic.device == "cpu"
    with pytest.raises(ValueError, match="either device or device_map"):
        DecoderCritic.from_pretrained(tiny_decoder_dir, device="cpu", device_map="auto")


# ------------------------------------------------------------------------------------------------------ quiet


def test_loading_and_saving_print_nothing(
    tiny_encoder_dir: Path, tiny_decoder_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    load_critic(tiny_encoder_dir, device="cpu")
    load_critic(tiny_decoder_dir, device="cpu", dtype="float32")
    save_tiny_encoder_critic(tmp_path / "encoder")
    save_tiny_decoder_critic(tmp_path / "decoder", qwen_tokenizer_dir(), num_layers=2, bidirectional_from=1)
    out, err = capfd.readouterr()
    assert err == ""
    assert out == ""


def test_quiet_loading_leaves_other_threads_and_hooks_alone(tiny_encoder_dir: Path) -> None:
    from transformers.utils import logging as hf_logging

    made: list[str] = []

    def user_hook(factory: Callable, args: tuple, kwargs: dict) -> object:
        made.append(str(kwargs.get("desc")))
        return hf_logging.EmptyTqdm(*args, **kwargs)

    enabled = hf_logging.is_progress_bar_enabled()
    previous = hf_logging.set_tqdm_hook(user_hook)
    try:
        load_critic(tiny_encoder_dir, device="cpu")
        assert made == []  # our load went around the user's hook
        with no_progress_bars():
            other = threading.Thread(target=lambda: hf_logging.tqdm(range(1), desc="other thread"))
            other.start()
            other.join()
            hf_logging.tqdm(range(1), desc="inside")
        assert made == ["other thread"]  # another thread's bars still reach the user's hook
    finally:
        assert hf_logging.set_tqdm_hook(previous) is user_hook
    assert hf_logging.is_progress_bar_enabled() is enabled
