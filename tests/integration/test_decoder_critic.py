"""The Qwen2 decoder critic on tiny random checkpoints saved in the released QwenLong-CPRS layout."""

from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cprs_integrations.models.base import PromptLayout
from cprs_integrations.models.decoder import (
    CONFIG_KEY,
    DecoderCritic,
    Qwen2CriticModel,
    resolve_bidirectional_from,
)
from cprs_integrations.models.encoder import EncoderCritic
from cprs_integrations.models.loading import load_critic
from cprs_integrations.models.testing import (
    qwen_tokenizer_dir,
    save_tiny_decoder_critic,
    save_tiny_encoder_critic,
)

INSTRUCTION = "Extract some sentences from the documents as the supporting facts."
QUERY = "Who founded the company?"
OFFICIAL_HEAD = (
    f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n<|im_start|>user\n{QUERY}<|im_end|>\n<|im_start|>context\n"
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 layers, ``cprs_bidirectional_from = 2`` in config.json, single ``model.safetensors``."""
    return save_tiny_decoder_critic(tmp_path_factory.mktemp("tiny") / "critic", qwen_tokenizer_dir())


@pytest.fixture(scope="session")
def sharded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_decoder_critic(tmp_path_factory.mktemp("sharded") / "critic", qwen_tokenizer_dir(), sharded=True)


@pytest.fixture(scope="session")
def critic(tiny_dir: Path) -> DecoderCritic:
    loaded = load_critic(tiny_dir, device="cpu", dtype="float32")
    assert isinstance(loaded, DecoderCritic)
    return loaded


@pytest.fixture(scope="session")
def sharded_critic(sharded_dir: Path) -> DecoderCritic:
    loaded = load_critic(sharded_dir, device="cpu", dtype="float32")
    assert isinstance(loaded, DecoderCritic)
    return loaded


@pytest.fixture(scope="session")
def causal_critic(tiny_dir: Path) -> DecoderCritic:
    """The same weights with every layer causal (``bidirectional_from = num_layers``)."""
    loaded = load_critic(tiny_dir, device="cpu", dtype="float32", bidirectional_from=4)
    assert isinstance(loaded, DecoderCritic)
    return loaded


@pytest.fixture(scope="session")
def layout(critic: DecoderCritic) -> PromptLayout:
    return critic.prompt_layout(INSTRUCTION, QUERY, max_prefix_tokens=128)


def _linked_copy(source: Path, target: Path, *, without: str = "") -> Path:
    """A copy of a critic folder made of symlinks (fast); unlink a file before writing it."""
    ignore = shutil.ignore_patterns(without) if without else None
    return Path(shutil.copytree(source, target, copy_function=os.symlink, ignore=ignore))


def _without_cls_head(folder: Path) -> None:
    weights = folder / "model.safetensors"
    tensors = {k: v for k, v in load_file(weights).items() if not k.startswith("cls_head.")}
    weights.unlink()  # a symlink: never write through it into the shared fixture
    save_file(tensors, weights, metadata={"format": "pt"})


def _window(length: int = 24, start: int = 1000) -> np.ndarray:
    return np.arange(start, start + length, dtype=np.int64)


def _with_last_changed(window: np.ndarray) -> np.ndarray:
    changed = window.copy()
    changed[-1] = 42_000
    return changed


def _assert_probabilities(probs: np.ndarray, length: int) -> None:
    assert probs.shape == (length, 4)
    assert probs.dtype == np.float32
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------- loading


def test_loads_real_layout_through_public_loader(
    critic: DecoderCritic, sharded_critic: DecoderCritic, sharded_dir: Path, layout: PromptLayout
) -> None:
    assert (sharded_dir / "model.safetensors.index.json").is_file()
    assert len(list(sharded_dir.glob("model-*.safetensors"))) > 1
    windows = [_window(7), _window(16, start=3000), _window(1, start=77)]
    for loaded in (critic, sharded_critic):
        assert loaded.kind == "decoder"
        assert loaded.device == "cpu"
        assert loaded.bidirectional_from == 2
        assert loaded.default_batch_size == 1
        assert loaded.max_sequence_tokens == 32768
        assert loaded.default_window_tokens == 8192
        for window, probs in zip(windows, loaded.score_windows(layout, windows), strict=True):
            _assert_probabilities(probs, len(window))
    for single, sharded in zip(
        critic.score_windows(layout, windows), sharded_critic.score_windows(layout, windows), strict=True
    ):
        np.testing.assert_allclose(single, sharded, atol=1e-6)


def test_lm_head_is_in_the_checkpoint_but_ignored(
    critic: DecoderCritic, tiny_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with safe_open(str(tiny_dir / "model.safetensors"), framework="pt") as f:
        assert {"lm_head.weight", "cls_head.weight", "cls_head.bias"} <= set(f.keys())
    assert not hasattr(critic.model, "lm_head")
    _, info = Qwen2CriticModel.from_pretrained(tiny_dir, dtype=torch.float32, output_loading_info=True)
    assert not info["unexpected_keys"]
    assert not info["missing_keys"]
    assert "lm_head" not in capfd.readouterr().err


def test_folder_without_cls_head_is_not_a_critic(tiny_dir: Path, tmp_path: Path) -> None:
    folder = _linked_copy(tiny_dir, tmp_path / "backbone")
    _without_cls_head(folder)
    with pytest.raises(ValueError, match="not a CPRS critic"):
        load_critic(folder, device="cpu", dtype="float32")


def test_missing_cls_head_is_caught_after_loading_too(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cprs_integrations.models.decoder as decoder

    folder = _linked_copy(tiny_dir, tmp_path / "backbone")
    _without_cls_head(folder)
    monkeypatch.setattr(decoder, "check_weights", lambda *_a, **_k: None)  # skip the check before loading
    with pytest.raises(ValueError, match=r"not a CPRS critic.*cls_head"):
        DecoderCritic.from_pretrained(str(folder), dtype=torch.float32)


def test_folder_without_safetensors_is_not_a_critic(tiny_dir: Path, tmp_path: Path) -> None:
    folder = _linked_copy(tiny_dir, tmp_path / "nosafetensors", without="*.safetensors")
    with pytest.raises(ValueError, match="not a CPRS critic"):
        load_critic(folder, device="cpu", dtype="float32")


def test_unknown_depth_without_config_key_needs_bidirectional_from(tiny_dir: Path, tmp_path: Path) -> None:
    folder = _linked_copy(tiny_dir, tmp_path / "nokey")
    config = json.loads((folder / "config.json").read_text())
    del config[CONFIG_KEY]
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="bidirectional_from"):
        load_critic(folder, device="cpu", dtype="float32")
    loaded = load_critic(folder, device="cpu", dtype="float32", bidirectional_from=3)
    assert isinstance(loaded, DecoderCritic)
    assert loaded.bidirectional_from == 3


def test_bidirectional_from_resolution_and_validation(tiny_dir: Path) -> None:
    from transformers import Qwen2Config

    assert resolve_bidirectional_from(Qwen2Config(num_hidden_layers=28)) == 21
    assert resolve_bidirectional_from(Qwen2Config(num_hidden_layers=28), 0) == 0
    for bad in (-1, 5, 2.5, True):
        with pytest.raises(ValueError, match=r"0\.\.4"):
            resolve_bidirectional_from(Qwen2Config(num_hidden_layers=4), bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"0\.\.4"):
        load_critic(tiny_dir, device="cpu", dtype="float32", bidirectional_from=5)


def test_argument_overrides_config_key_and_round_trips(
    causal_critic: DecoderCritic, tiny_dir: Path, tmp_path: Path
) -> None:
    assert json.loads((tiny_dir / "config.json").read_text())[CONFIG_KEY] == 2
    assert causal_critic.bidirectional_from == 4
    assert all(layer.self_attn.is_causal for layer in causal_critic.model.model.layers)
    model = copy.deepcopy(causal_critic.model)
    model.set_bidirectional_from(3)
    assert [layer.self_attn.is_causal for layer in model.model.layers] == [True, True, True, False]
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())[CONFIG_KEY] == 3
    assert Qwen2CriticModel.from_pretrained(tmp_path / "saved").bidirectional_from == 3


def test_unavailable_device_is_an_error(tiny_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_critic(tiny_dir, device="cuda", dtype="float32")
    with pytest.raises(ValueError, match="CUDA is not available"):
        DecoderCritic.from_pretrained(str(tiny_dir), device="cuda")


def test_forward_passes_no_deprecated_transformers_argument(critic: DecoderCritic, layout: PromptLayout) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        critic.score_windows(layout, [_window(8)])
    deprecations = [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not deprecations, [str(w.message) for w in deprecations]


def test_flash_attention_is_refused(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="masks"):
        DecoderCritic.from_pretrained(str(tiny_dir), attn_implementation="flash_attention_2")


# ------------------------------------------------------------------------------------------- attention


def test_later_token_changes_earlier_scores_only_when_bidirectional(
    critic: DecoderCritic, causal_critic: DecoderCritic, layout: PromptLayout
) -> None:
    window = _window(24)
    changed = _with_last_changed(window)
    before, after = critic.score_windows(layout, [window, changed])
    assert np.abs(before[:-1] - after[:-1]).max() > 1e-5

    before, after = causal_critic.score_windows(layout, [window, changed])
    np.testing.assert_allclose(before[:-1], after[:-1], atol=1e-6)
    assert np.abs(before[-1] - after[-1]).max() > 1e-5


def test_lower_layers_are_causal_upper_layers_are_not(critic: DecoderCritic, layout: PromptLayout) -> None:
    captured: dict[int, list[torch.Tensor]] = {1: [], 2: []}
    layers = critic.model.model.layers
    handles = [
        layers[i].register_forward_hook(lambda _m, _a, out, i=i: captured[i].append(out.detach().clone()))
        for i in captured
    ]
    try:
        window = _window(24)
        critic.score_windows(layout, [window])
        critic.score_windows(layout, [_with_last_changed(window)])
    finally:
        for handle in handles:
            handle.remove()
    last = len(layout.head) + len(window) - 1
    causal_before, causal_after = captured[1]  # layer 1 < bidirectional_from = 2
    torch.testing.assert_close(causal_before[:, :last], causal_after[:, :last], atol=1e-6, rtol=0)
    assert (causal_before[:, last] - causal_after[:, last]).abs().max() > 1e-4
    upper_before, upper_after = captured[2]  # layer 2 is the first bidirectional one
    assert (upper_before[:, :last] - upper_after[:, :last]).abs().max() > 1e-5


def test_padding_does_not_change_scores(critic: DecoderCritic, layout: PromptLayout) -> None:
    short, long = _window(9), _window(30, start=5000)
    alone = critic.score_windows(layout, [short])[0]
    batched = critic.score_windows(layout, [short, long])
    np.testing.assert_allclose(alone, batched[0], atol=1e-5)
    np.testing.assert_allclose(critic.score_windows(layout, [long])[0], batched[1], atol=1e-5)


def test_eager_and_sdpa_agree(critic: DecoderCritic, tiny_dir: Path, layout: PromptLayout) -> None:
    model = Qwen2CriticModel.from_pretrained(tiny_dir, dtype=torch.float32, attn_implementation="eager")
    eager = DecoderCritic(model, critic.tokenizer)
    assert eager.model.config._attn_implementation == "eager"
    windows = [_window(9), _window(20, start=4000)]
    for ours, theirs in zip(critic.score_windows(layout, windows), eager.score_windows(layout, windows), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_replicate_gives_an_independent_copy(critic: DecoderCritic, layout: PromptLayout) -> None:
    clone = critic.replicate("cpu")
    assert clone.model is not critic.model
    assert clone.bidirectional_from == critic.bidirectional_from
    window = [_window(10)]
    np.testing.assert_allclose(clone.score_windows(layout, window)[0], critic.score_windows(layout, window)[0])


def test_model_alone_matches_its_docstring() -> None:
    from transformers import Qwen2Config

    config = Qwen2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        **{CONFIG_KEY: 2},
    )
    model = Qwen2CriticModel(config)
    assert model(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 1]])).shape == (1, 3, 4)


# ---------------------------------------------------------------------------------------------- prompt


def test_prompt_layout_is_the_official_template(critic: DecoderCritic, layout: PromptLayout) -> None:
    assert layout.tail == ()
    assert critic.tokenizer.decode(list(layout.head)) == OFFICIAL_HEAD
    assert layout.head.count(critic.tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3
    assert layout.head.count(critic.tokenizer.convert_tokens_to_ids("<|im_end|>")) == 2


@pytest.mark.parametrize("max_prefix_tokens", [20, 30, 60])
def test_prompt_layout_truncates_query_then_instruction(critic: DecoderCritic, max_prefix_tokens: int) -> None:
    long_query = "Who founded the company and when? " * 20
    layout = critic.prompt_layout(INSTRUCTION, long_query, max_prefix_tokens)
    assert layout.overhead <= max_prefix_tokens
    text = critic.tokenizer.decode(list(layout.head))
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_end|>\n<|im_start|>context\n")
    if max_prefix_tokens == 60:
        assert INSTRUCTION in text  # the query is cut first
    with pytest.raises(ValueError, match="max_prefix_tokens"):
        critic.prompt_layout(INSTRUCTION, QUERY, 5)


@pytest.mark.parametrize(
    ("instruction", "query"),
    [
        (INSTRUCTION, QUERY),
        ("\nExtract the facts.", "\nWho founded it?"),  # leading newlines: per-role tokenizing gave other ids
        ("Extract.\n\n", "  Who?  "),
        ("抽取句子。", "谁创立了公司？"),
    ],
)
def test_prompt_ids_are_the_official_servers(critic: DecoderCritic, instruction: str, query: str) -> None:
    # The official server: tokenizer.encode(query_str) of the whole prefix string (src/api_utils/run_api.py).
    official = (
        f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>context\n"
    )
    layout = critic.prompt_layout(instruction, query, max_prefix_tokens=256)
    assert list(layout.head) == critic.tokenizer.encode(official)


def test_a_query_longer_than_the_prefix_is_cut_with_one_warning(
    critic: DecoderCritic, caplog: pytest.LogCaptureFixture
) -> None:
    from cprs_integrations.models import base

    base._long_prefix_warned.clear()
    with caplog.at_level("WARNING"):
        critic.prompt_layout(INSTRUCTION, "Who? " * 200, max_prefix_tokens=40)
        critic.prompt_layout(INSTRUCTION, "When? " * 200, max_prefix_tokens=40)
    assert sum("the query is cut" in r.getMessage() for r in caplog.records) == 1


def test_rope_scaling_is_ignored_as_the_official_stack_did(tmp_path: Path) -> None:
    from transformers import Qwen2Config

    from cprs_integrations.models.decoder import official_rope
    from cprs_integrations.models.testing import qwen_tokenizer_dir, save_tiny_decoder_critic

    path = save_tiny_decoder_critic(tmp_path / "rope", qwen_tokenizer_dir(), num_layers=2, hidden=32)
    config_file = Path(path) / "config.json"
    config = json.loads(config_file.read_text())
    config["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    config_file.write_text(json.dumps(config))
    loaded = load_critic(path, device="cpu", dtype="float32")
    assert loaded.model.config.rope_parameters["rope_type"] == "default"
    plain = Qwen2Config(rope_theta=5000.0)
    assert official_rope(plain, "x").rope_parameters == {"rope_theta": 5000.0, "rope_type": "default"}


def test_decoder_instructions_follow_the_released_model() -> None:
    from cprs_integrations.engine.prompts import DECODER_INSTRUCTIONS, INSTRUCTIONS, instruction_for

    assert instruction_for("sentence", critic_kind="decoder") == DECODER_INSTRUCTIONS["sentence"]
    assert "tag the supporting facts with 'fact'" in DECODER_INSTRUCTIONS["sentence"]
    assert instruction_for("sentence") == INSTRUCTIONS["en"]["sentence"][0]  # the MiniLM critic's own
    assert instruction_for("sentence", "zh", critic_kind="decoder") == INSTRUCTIONS["zh"]["sentence"][0]


def test_auto_dtype_on_cuda_is_fp16_for_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    from cprs_integrations.models.devices import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", "cuda", critic_kind="decoder") == torch.float16
    assert resolve_dtype("auto", "cuda:1", critic_kind="encoder") == torch.bfloat16
    assert resolve_dtype("bfloat16", "cuda", critic_kind="decoder") == torch.bfloat16


# --------------------------------------------------------------------------------------------- helpers


def test_tiny_encoder_twin_loads_as_encoder_critic(tmp_path: Path) -> None:
    path = save_tiny_encoder_critic(tmp_path / "encoder")
    loaded = load_critic(path, device="cpu", dtype="float32")
    assert isinstance(loaded, EncoderCritic)
    assert loaded.max_sequence_tokens == 128
    layout = loaded.prompt_layout("Extract.", "Who?", max_prefix_tokens=16)
    ids = np.asarray(loaded.tokenizer("hello world again")["input_ids"][1:-1])
    _assert_probabilities(loaded.score_windows(layout, [ids])[0], len(ids))
