"""Tokenize once with offsets, and cut token sequences into windows (pure functions; numpy only).

Windows are cut at soft boundaries: a window ends at the last paragraph start (else sentence start) in its final
quarter, so that units are rarely split across windows; a hard cut is used only when no boundary is near. Positions
restart at 0 in every window and each window is scored independently with the shared prefix, so cost is linear in
the length of the text.

Example:
    >>> import numpy as np
    >>> cut_windows(n_tokens=10, content_tokens=4, preferred_starts=np.array([3, 7])).tolist()
    [[0, 3], [3, 7], [7, 10]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cprs_integrations.models.tokenization import raw_backend

#: A window may end early, at a boundary in its last ``1 - SOFT_CUT_FROM`` share, to avoid splitting a unit.
SOFT_CUT_FROM = 0.75


@dataclass(frozen=True)
class TokenizedText:
    """A text tokenized once by the critic's tokenizer (no special tokens).

    Attributes:
        ids: ``(n,)`` int64 token ids.
        offsets: ``(n, 2)`` int64 ``[start, end)`` character offsets into the text.
    """

    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def tokenize_with_offsets(tokenizer: Any, texts: list[str]) -> list[TokenizedText]:
    """Tokenize texts with a Hugging Face *fast* tokenizer, keeping character offsets.

    Tokens with empty offsets (added by some normalizers) are kept; their offsets are clamped into the text.
    """
    if not texts:
        return []
    encodings = raw_backend(tokenizer).encode_batch(texts, add_special_tokens=False)
    out = []
    for encoding in encodings:
        ids = np.asarray(encoding.ids, dtype=np.int64)
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        out.append(TokenizedText(ids=ids, offsets=offsets))
    return out


def boundary_token_starts(offsets: np.ndarray, char_starts: np.ndarray) -> np.ndarray:
    """Index of the first token at or after each character position (unique, sorted, > 0)."""
    if len(offsets) == 0 or len(char_starts) == 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.searchsorted(offsets[:, 0], char_starts, side="left")
    idx = idx[(idx > 0) & (idx < len(offsets))]
    return np.unique(idx)


def cut_windows(
    n_tokens: int,
    content_tokens: int,
    preferred_starts: np.ndarray | None = None,
    fallback_starts: np.ndarray | None = None,
) -> np.ndarray:
    """Cut ``n_tokens`` tokens into consecutive, non-overlapping windows of at most ``content_tokens``.

    Args:
        n_tokens: Length of the token sequence.
        content_tokens: Maximum tokens per window (the window size less the prefix).
        preferred_starts: Sorted token indices where a window should preferably start (paragraph starts).
        fallback_starts: Sorted token indices to use when no preferred one is near (sentence starts).

    Returns:
        ``(w, 2)`` int64 array of ``[start, end)`` token ranges covering ``0..n_tokens`` exactly.
    """
    if content_tokens < 1:
        raise ValueError(f"content_tokens must be >= 1, got {content_tokens}")
    windows: list[tuple[int, int]] = []
    start = 0
    empty = np.zeros(0, dtype=np.int64)
    preferred = empty if preferred_starts is None else preferred_starts
    fallback = empty if fallback_starts is None else fallback_starts
    while start < n_tokens:
        hard_end = min(start + content_tokens, n_tokens)
        end = hard_end
        if hard_end < n_tokens:
            earliest = start + max(1, int(content_tokens * SOFT_CUT_FROM))
            end = _last_in(preferred, earliest, hard_end) or _last_in(fallback, earliest, hard_end) or hard_end
        windows.append((start, end))
        start = end
    return np.asarray(windows, dtype=np.int64).reshape(-1, 2)


def _last_in(sorted_points: np.ndarray, low: int, high: int) -> int | None:
    """The largest point ``p`` with ``low <= p <= high``, if any."""
    i = int(np.searchsorted(sorted_points, high, side="right")) - 1
    if i >= 0 and sorted_points[i] >= low:
        return int(sorted_points[i])
    return None
