"""Session-scoped tiny critics saved in the real file layout, loaded through the public loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight BERT critic (2 layers, hidden 32, 128 positions) with the MiniLM tokenizer."""
    from cprs_integrations.models.testing import save_tiny_encoder_critic

    path = tmp_path_factory.mktemp("critics") / "tiny-encoder"
    save_tiny_encoder_critic(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2 critic (4 layers, upper 2 bidirectional) with the Qwen tokenizer."""
    from cprs_integrations.models.testing import qwen_tokenizer_dir, save_tiny_decoder_critic

    path = tmp_path_factory.mktemp("critics") / "tiny-decoder"
    save_tiny_decoder_critic(path, qwen_tokenizer_dir(), num_layers=4, hidden=32, bidirectional_from=2, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_engine(tiny_encoder_dir: Path):
    """An engine on the tiny encoder with 64-token windows, so short texts already span several windows."""
    from cprs_integrations import CPRSEngine

    return CPRSEngine.from_pretrained(tiny_encoder_dir, device="cpu", dtype="float32", window_tokens=64)


@pytest.fixture(scope="session")
def long_text() -> str:
    """About 2,000 tokens of essay text with paragraphs."""
    from cprs_integrations.training.data import essay_text

    return essay_text()[:9000]
