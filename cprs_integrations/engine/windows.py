"""Tokenize once with offsets, and cut token sequences into windows (pure functions; numpy only).

Windows are cut at soft boundaries: a window ends at the last paragraph start (else sentence start) in its final
quarter, so that units are rarely split across windows; a hard cut is used only when no boundary is near. Positions
restart at 0 in every window and each window is scored independently with the shared prefix, so cost is linear in
the length of the text.

Examples:
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

    Long texts are tokenized in pieces of about :data:`TOKENIZE_PIECE_CHARS` characters (four at a time, in
    parallel), cut after a line break that is followed by a non-space character (no pre-tokenizer of a BERT- or
    Qwen-style tokenizer joins a line break to the next word, so the ids are those of the whole text), so that the
    tokenizer's per-token objects exist for a few pieces at a time only. Tokens with empty offsets (added by some
    normalizers) are kept.
    """
    if not texts:
        return []
    backend = raw_backend(tokenizer)
    pieces: list[tuple[int, int, int]] = []  # (text index, start, end)
    for i, text in enumerate(texts):
        pieces.extend((i, start, end) for start, end in _pieces(text))
    per_text: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in texts]
    for first in range(0, len(pieces), _PIECES_PER_BATCH):
        group = pieces[first : first + _PIECES_PER_BATCH]
        encodings = backend.encode_batch([texts[i][s:e] for i, s, e in group], add_special_tokens=False)
        for (i, start, _), encoding in zip(group, encodings):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2) + start
            per_text[i].append((ids, offsets))
    out = []
    for parts in per_text:
        if len(parts) == 1:
            out.append(TokenizedText(ids=parts[0][0], offsets=parts[0][1]))
        else:
            ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
            offsets = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 2), dtype=np.int64)
            out.append(TokenizedText(ids=ids, offsets=offsets))
    return out


#: Texts longer than this many characters are tokenized piece by piece (see :func:`tokenize_with_offsets`).
TOKENIZE_PIECE_CHARS = 250_000
_PIECES_PER_BATCH = 4


def _pieces(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` pieces of ``text``: cut after a line break followed by a non-space, near every
    :data:`TOKENIZE_PIECE_CHARS` characters (one piece when there is no such line break)."""
    if len(text) <= TOKENIZE_PIECE_CHARS:
        return [(0, len(text))]
    cuts = [0]
    while len(text) - cuts[-1] > TOKENIZE_PIECE_CHARS:
        cut = _line_start_near(text, cuts[-1] + TOKENIZE_PIECE_CHARS, cuts[-1])
        if cut is None:
            break
        cuts.append(cut)
    return list(zip(cuts, [*cuts[1:], len(text)]))


def _line_start_near(text: str, target: int, floor: int) -> int | None:
    """The last position ``p`` in ``(floor, target]`` with ``text[p-1] == "\n"`` and ``text[p]`` not a space, or
    the first after ``target``; ``None`` if there is none."""
    position = target
    while (position := text.rfind("\n", floor + 1, position)) != -1:
        if position + 1 < len(text) and not text[position + 1].isspace():
            return position + 1
    position = target
    while (position := text.find("\n", position)) != -1 and position + 1 < len(text):
        if not text[position + 1].isspace():
            return position + 1
        position += 1
    return None


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
