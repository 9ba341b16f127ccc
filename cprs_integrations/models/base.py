"""The scoring interface every critic implements: a batch of windows in, per-token BIOE probabilities out.

Critics know nothing of budgets, units or selection. The engine tokenizes texts with ``critic.tokenizer``, asks
the critic for the prompt layout of a call (the shared instruction + query prefix in the model's own format), cuts
windows, and hands them to :meth:`TokenCritic.score_windows` in length-sorted batches.
"""

from __future__ import annotations

import copy
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Tag order of the 4-way head, as in the released QwenLong-CPRS checkpoint.
TAGS: tuple[str, ...] = ("B", "I", "O", "E")
TAG_B, TAG_I, TAG_O, TAG_E = 0, 1, 2, 3
ID2LABEL: dict[int, str] = dict(enumerate(TAGS))
LABEL2ID: dict[str, int] = {tag: i for i, tag in ID2LABEL.items()}


@dataclass(frozen=True)
class PromptLayout:
    """Token ids placed around every window of one call.

    Attributes:
        head: Ids before the window (special tokens, query, instruction).
        tail: Ids after the window (e.g. a closing ``[SEP]``).
    """

    head: tuple[int, ...]
    tail: tuple[int, ...]

    @property
    def overhead(self) -> int:
        """Tokens the layout adds to each window."""
        return len(self.head) + len(self.tail)


class TokenCritic(ABC):
    """A model that labels every window token with B / I / O / E probabilities.

    Attributes:
        tokenizer: A Hugging Face fast tokenizer (offsets are needed).
        kind: ``"encoder"`` or ``"decoder"``.
        max_sequence_tokens: Longest sequence (layout + window) the model accepts.
        default_window_tokens: Window size, layout included, used when the engine is not told otherwise.
        default_batch_size: Windows per forward pass when the engine is not told otherwise.
        name_or_path: Where the critic was loaded from.
    """

    tokenizer: Any
    kind: str
    max_sequence_tokens: int
    default_window_tokens: int
    default_batch_size: int
    name_or_path: str

    @property
    @abstractmethod
    def device(self) -> str:
        """The device the weights live on (``"cpu"``, ``"cuda:0"``, ...; ``"auto"`` for a device map)."""

    @abstractmethod
    def prompt_layout(self, instruction: str, query: str, max_prefix_tokens: int) -> PromptLayout:
        """The ids placed around every window for this instruction and query.

        The query (then the instruction) is truncated so that ``layout.overhead <= max_prefix_tokens``.
        """

    @abstractmethod
    def score_windows(
        self, layout: PromptLayout | Sequence[PromptLayout], windows: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Score one batch: for each window of ids, a ``(len(window), 4)`` float32 array of B/I/O/E probabilities.

        ``layout`` is one layout for every window, or one per window (windows of different calls, each with its
        own instruction and query, share a forward pass).
        """

    def replicate(self, device: str) -> TokenCritic:
        """A copy of this critic on another device (for one replica per GPU). Subclasses may override."""
        clone = copy.copy(self)
        clone.model = copy.deepcopy(self.model).to(device)  # type: ignore[attr-defined]
        return clone


def layouts_for(layout: PromptLayout | Sequence[PromptLayout], n_windows: int) -> list[PromptLayout]:
    """One layout per window: ``layout`` repeated, or the given per-window layouts (checked for length)."""
    if isinstance(layout, PromptLayout):
        return [layout] * n_windows
    layouts = list(layout)
    if len(layouts) != n_windows:
        raise ValueError(f"got {len(layouts)} layouts for {n_windows} windows; give one layout or one per window")
    return layouts


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into ``(ids, mask)`` int64 arrays of shape ``(batch, longest)``."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


_long_prefix_warned = threading.Event()


def warn_long_prefix(prefix_tokens: int, limit: int) -> None:
    """Log once per process that a query (with its instruction) is cut to fit the prefix of a window."""
    if not _long_prefix_warned.is_set():
        _long_prefix_warned.set()
        logger.warning(
            "cprs: the query and instruction take %d critic tokens, more than the %d a window's prefix may use "
            "(half a window); the query is cut, then the instruction. Shorten the query or use larger windows "
            "(window_tokens). Logged once per process.",
            prefix_tokens,
            limit,
        )


def truncate_prefix(query_ids: list[int], instruction_ids: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Shorten query (first) then instruction ids so that together they fit ``budget`` tokens."""
    budget = max(0, budget)
    if len(query_ids) + len(instruction_ids) <= budget:
        return query_ids, instruction_ids
    keep_instruction = min(len(instruction_ids), max(budget // 4, budget - len(query_ids)))
    keep_query = max(0, budget - keep_instruction)
    return query_ids[:keep_query], instruction_ids[:keep_instruction]
