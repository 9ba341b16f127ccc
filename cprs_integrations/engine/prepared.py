"""What the engine derives from a text before any query: critic tokens, sentence and paragraph starts, token counts.

None of it depends on the query, so a text compressed again (a retriever's fixed corpus, a long document asked
several questions) reuses it: :class:`PreparedCache` keeps the prepared texts of recent calls, bounded by their
critic tokens, keyed by the text itself (Python caches a string's hash, and a hit is confirmed by equality). The
coarse filter's sentence embeddings are kept the same way (:class:`EmbeddingCache`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cprs_integrations.engine import segment
from cprs_integrations.engine.windows import TokenizedText, boundary_token_starts

#: Default bound of :class:`PreparedCache`, in critic tokens (about 50 bytes each: ids, offsets, starts).
DEFAULT_CACHE_TOKENS = 2_000_000
#: Default bound of :class:`EmbeddingCache`, in sentences (256 float16 values each: 512 bytes).
DEFAULT_CACHE_SENTENCES = 200_000


@dataclass
class PreparedText:
    """One text, tokenized and segmented.

    Attributes:
        tokenized: Its critic tokens with character offsets.
        sentences: ``(s, 2)`` sentence char spans.
        paragraph_starts: Token indices where a paragraph starts (for cutting windows).
        sentence_starts: Token indices where a sentence starts.
        counts: Tokens of the text under a named token counter (``"o200k_base"``), filled on demand.
    """

    tokenized: TokenizedText
    sentences: np.ndarray
    paragraph_starts: np.ndarray
    sentence_starts: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


def prepare(text: str, tokenized: TokenizedText) -> PreparedText:
    """Segment ``text`` (already tokenized) into what windows and the coarse filter need. The arrays are made
    read-only: a cached text's offsets are shared by every :class:`TokenScores` later made from it."""
    tokenized.ids.setflags(write=False)
    tokenized.offsets.setflags(write=False)
    if len(tokenized) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return PreparedText(tokenized, np.zeros((0, 2), dtype=np.int64), empty, empty)
    sentences = segment.sentence_spans(text)
    return PreparedText(
        tokenized,
        sentences,
        boundary_token_starts(tokenized.offsets, segment.paragraph_spans(text)[:, 0]),
        boundary_token_starts(tokenized.offsets, sentences[:, 0]),
    )


class PreparedCache:
    """Least-recently-used :class:`PreparedText` by text, holding at most ``max_tokens`` critic tokens; thread-safe.

    Args:
        max_tokens: Bound in critic tokens; ``0`` keeps nothing. A text longer than the bound is never kept.
    """

    def __init__(self, max_tokens: int = DEFAULT_CACHE_TOKENS):
        self.max_tokens = max_tokens
        self._items: OrderedDict[str, PreparedText] = OrderedDict()
        self._tokens = 0
        self._lock = threading.Lock()

    def get(self, text: str) -> PreparedText | None:
        """The prepared text (now the most recently used), or ``None``."""
        with self._lock:
            prepared = self._items.get(text)
            if prepared is not None:
                self._items.move_to_end(text)
            return prepared

    def put(self, text: str, prepared: PreparedText) -> None:
        """Keep ``prepared`` for ``text``, dropping the least recently used texts past the bound; a text without
        tokens (cheap to prepare again) or longer than the bound is not kept."""
        size = len(prepared.tokenized)
        if size == 0 or size > self.max_tokens:
            return
        with self._lock:
            if text in self._items:
                return
            self._items[text] = prepared
            self._tokens += size
            while self._tokens > self.max_tokens:
                _, dropped = self._items.popitem(last=False)
                self._tokens -= len(dropped.tokenized)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._tokens = 0


class EmbeddingCache:
    """Wraps an embedding function with a least-recently-used cache of vectors by sentence text (float16 kept).

    Args:
        embed: ``texts -> (n, d)`` embeddings.
        max_sentences: Bound in sentences; ``0`` keeps nothing.
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray], max_sentences: int = DEFAULT_CACHE_SENTENCES):
        self.embed = embed
        self.max_sentences = max_sentences
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                if text in self._items:
                    self._items.move_to_end(text)
                    found[text] = self._items[text]
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            # kept in float16, and returned rounded the same way on a miss: a text gets the same vector on every call
            fresh = self.embed(missing).astype(np.float16)
            found.update(zip(missing, fresh))
            if self.max_sentences:
                with self._lock:
                    self._items.update(zip(missing, fresh))
                    while len(self._items) > self.max_sentences:
                        self._items.popitem(last=False)
        if not texts:
            return self.embed([])
        return np.stack([found[t] for t in texts]).astype(np.float32)
