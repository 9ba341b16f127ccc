"""The BERT-family encoder critic (the embedded default is all-MiniLM-L6-v2 with a 4-way BIOE head).

Layout per window: ``[CLS] query [SEP] instruction [SEP] window [SEP]``, token type 0 for the prefix and 1 for the
window. Saved in the standard Hugging Face layout of ``*ForTokenClassification`` (``config.json`` with
``id2label = {0: B, 1: I, 2: O, 3: E}``, ``model.safetensors``, tokenizer files), so it also loads with
``AutoModelForTokenClassification``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cprs_integrations.models.base import (
    PromptLayout,
    TokenCritic,
    layouts_for,
    pad_batch,
    truncate_prefix,
    warn_long_prefix,
)
from cprs_integrations.models.checkpoint import (
    CheckpointLocation,
    check_loading_info,
    check_weights,
    load_tokenizer,
    read_config,
)
from cprs_integrations.models.devices import resolve_device
from cprs_integrations.models.progress import no_progress_bars
from cprs_integrations.models.tokenization import raw_backend


class EncoderCritic(TokenCritic):
    """Scores windows with a bidirectional encoder and a 4-way token head.

    Args:
        model: A ``*ForTokenClassification`` model with 4 labels (B, I, O, E).
        tokenizer: Its fast tokenizer.
        name_or_path: Where it came from (for messages and caching).
        batch_size: Default windows per forward pass.

    Examples:
        >>> critic = EncoderCritic.from_pretrained("path/to/critic", device="cpu")  # doctest: +SKIP
        >>> layout = critic.prompt_layout("Extract sentences.", "Who?", max_prefix_tokens=64)  # doctest: +SKIP
    """

    kind = "encoder"

    def __init__(self, model: Any, tokenizer: Any, name_or_path: str = "", batch_size: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        config = model.config
        self.max_sequence_tokens = int(getattr(config, "max_position_embeddings", 512))
        self.default_window_tokens = self.max_sequence_tokens
        self.uses_token_types = uses_token_types(config)
        on_gpu = self.device.startswith("cuda")
        self.default_batch_size = batch_size or (64 if on_gpu else 16)
        self._cls = _required_id(tokenizer, "cls_token_id")
        self._sep = _required_id(tokenizer, "sep_token_id")
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: Any = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        batch_size: int | None = None,
    ) -> EncoderCritic:
        """Load an encoder critic saved in the Hugging Face token-classification layout (safetensors only).

        The checkpoint is checked against its ``config.json`` before any weight is allocated (see
        :mod:`cprs_integrations.models.checkpoint`).

        Args:
            path: Folder or hub id.
            device: Where to put the weights; ``None`` picks cuda > mps > cpu. An explicit device must exist.
            dtype: A ``torch.dtype`` (``None``: transformers' default).
            revision: Hub revision.
            local_files_only: Never touch the network.
            trust_remote_code: Passed through to transformers.
            batch_size: Default windows per forward pass.

        Raises:
            FileNotFoundError: a path that is no folder.
            ValueError: not a CPRS critic (no config, no token-classification head), weights that do not match
                the config (missing layers, other shapes), missing or broken tokenizer files, unavailable device.
        """
        from transformers import AutoModelForTokenClassification

        target = resolve_device(device)
        location = CheckpointLocation.of(path, revision=revision, local_files_only=local_files_only)
        config = read_config(location, trust_remote_code=trust_remote_code)
        check_weights(
            location,
            lambda: AutoModelForTokenClassification.from_config(config, trust_remote_code=trust_remote_code),
        )
        tokenizer = load_tokenizer(location, vocab_size=int(config.vocab_size), trust_remote_code=trust_remote_code)
        with no_progress_bars():
            model, info = AutoModelForTokenClassification.from_pretrained(
                location.where,
                config=config,
                dtype=dtype,
                use_safetensors=True,
                attn_implementation="sdpa",
                output_loading_info=True,
                trust_remote_code=trust_remote_code,
                **location.hub_options(),
            )
        check_loading_info(location.where, model, info)
        return cls(model.to(target), tokenizer, name_or_path=location.where, batch_size=batch_size)

    def prompt_layout(self, instruction: str, query: str, max_prefix_tokens: int) -> PromptLayout:
        encode = raw_backend(self.tokenizer).encode
        query_ids = encode(query, add_special_tokens=False).ids
        instruction_ids = encode(instruction, add_special_tokens=False).ids
        if len(query_ids) + len(instruction_ids) > max_prefix_tokens - 4:
            warn_long_prefix(len(query_ids) + len(instruction_ids) + 4, max_prefix_tokens)
        query_ids, instruction_ids = truncate_prefix(query_ids, instruction_ids, max_prefix_tokens - 4)
        head = (self._cls, *query_ids, self._sep, *instruction_ids, self._sep)
        return PromptLayout(head=head, tail=(self._sep,))

    def batch_tensors(self, layout: PromptLayout | Sequence[PromptLayout], windows: list[np.ndarray]) -> dict[str, Any]:
        """Model inputs for a batch of windows, one layout or one per window (shared by inference and training)."""
        import torch

        layouts = layouts_for(layout, len(windows))
        sequences = [[*lay.head, *np.asarray(w).tolist(), *lay.tail] for lay, w in zip(layouts, windows)]
        ids, mask = pad_batch(sequences, self._pad)
        inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if self.uses_token_types:
            token_types = np.zeros_like(ids)
            for row, lay in enumerate(layouts):
                token_types[row, len(lay.head) :] = 1
            inputs["token_type_ids"] = torch.from_numpy(token_types * mask)
        return inputs

    def score_windows(
        self, layout: PromptLayout | Sequence[PromptLayout], windows: list[np.ndarray]
    ) -> list[np.ndarray]:
        import torch

        if not windows:
            return []
        layouts = layouts_for(layout, len(windows))
        device = self.device
        inputs = {k: v.to(device) for k, v in self.batch_tensors(layouts, windows).items()}
        with torch.inference_mode():
            logits = self.model(**inputs).logits
            probs = logits.float().softmax(dim=-1).cpu().numpy()
        return [
            np.ascontiguousarray(probs[row, len(lay.head) : len(lay.head) + len(w)])
            for row, (lay, w) in enumerate(zip(layouts, windows))
        ]


def uses_token_types(config: Any) -> bool:
    """Whether the model takes ``token_type_ids`` (BERT-style: two types or more; RoBERTa and DistilBERT: no)."""
    return int(getattr(config, "type_vocab_size", 0) or 0) >= 2


def _required_id(tokenizer: Any, attribute: str) -> int:
    value = getattr(tokenizer, attribute, None)
    if value is None:
        raise ValueError(
            f"encoder critic tokenizer {type(tokenizer).__name__} has no {attribute}; an encoder critic needs "
            "[CLS]/[SEP]-style special tokens"
        )
    return int(value)
