"""A deterministic fake critic on a real tokenizer: tokens that occur in the query get a high keep probability."""

from __future__ import annotations

from typing import Any

import numpy as np

from cprs_integrations.models.base import PromptLayout, TokenCritic, layouts_for, truncate_prefix
from cprs_integrations.models.tokenization import raw_backend


class KeywordCritic(TokenCritic):
    """Keep-probability 0.9 for tokens whose id appears in the query, 0.05 otherwise; records every batch."""

    kind = "encoder"

    def __init__(self, tokenizer: Any, window_tokens: int = 64, batch_size: int = 4, fail_above: int | None = None):
        self.tokenizer = tokenizer
        self.max_sequence_tokens = 512
        self.default_window_tokens = window_tokens
        self.default_batch_size = batch_size
        self.name_or_path = "fake-keyword-critic"
        self.batches: list[int] = []
        self.fail_above = fail_above
        self._query_ids: set[int] = set()

    @property
    def device(self) -> str:
        return "cpu"

    def prompt_layout(self, instruction: str, query: str, max_prefix_tokens: int) -> PromptLayout:
        encode = raw_backend(self.tokenizer).encode
        query_ids = encode(query, add_special_tokens=False).ids
        instruction_ids = encode(instruction, add_special_tokens=False).ids
        query_ids, instruction_ids = truncate_prefix(query_ids, instruction_ids, max_prefix_tokens - 4)
        return PromptLayout(head=(101, *query_ids, 102, *instruction_ids, 102), tail=(102,))

    def score_windows(self, layout: Any, windows: list[np.ndarray]) -> list[np.ndarray]:
        if self.fail_above is not None and len(windows) > self.fail_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        self.batches.append(len(windows))
        out = []
        for lay, window in zip(layouts_for(layout, len(windows)), windows):
            query = set(lay.head[1 : lay.head.index(102)])
            keep = np.where(np.isin(window, list(query)), 0.9, 0.05)
            probs = np.zeros((len(window), 4), dtype=np.float32)
            probs[:, 0] = keep * 0.3  # B
            probs[:, 1] = keep * 0.7  # I
            probs[:, 2] = 1.0 - keep  # O
            out.append(probs)
        return out

    def replicate(self, device: str) -> KeywordCritic:
        return KeywordCritic(self.tokenizer, self.default_window_tokens, self.default_batch_size)
