"""Unit boundaries as character offsets: words, sentences, paragraphs, chunks.

Every function returns an ``int64`` array of shape ``(n, 2)`` with ``[start, end)`` character offsets into the
text, sorted, non-overlapping, each unit stripped of surrounding whitespace. Units never contain a position that
belongs to another unit, and every non-whitespace character of the text lies in exactly one unit (for
:func:`sentence_spans`, :func:`paragraph_spans` and :func:`word_spans`), so selections built from them are exact
slices of the input.

Pure Python + numpy; no torch.

Example:
    >>> sentence_spans("One. Two! three?\\nFour").tolist()
    [[0, 4], [5, 16], [17, 21]]
"""

from __future__ import annotations

import re

import numpy as np

# A sentence ends after . ! ? … (plus closing quotes / brackets) followed by whitespace and a character that is not
# a lower-case ASCII letter (so "e.g. the" does not split), unless the period ends an initial ("C. Robert") or a
# common title abbreviation ("Dr. Who"); after CJK full stops; at a line break unless the next line starts in lower
# case (hard-wrapped text keeps its sentences whole; a title line stays apart from the sentence after it).
_NOT_AN_ABBREVIATION = r"(?<!\b[A-Z])(?<!\bMr)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bJr)(?<!\bSr)(?<!\bMrs)(?<!\bvs)(?<!\bNo)"
_SENTENCE_BREAK = re.compile(
    _NOT_AN_ABBREVIATION + r"""[.!?…]+['"”’)\]]*\s+(?=[^\sa-z])"""
    r"""|[。！？]+['"”’」』)]*\s*"""
    r"""|\s*\n\s*(?![a-z])"""
)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_LINE_BREAK = re.compile(r"\s*\n\s*")
_WORD = re.compile(r"\S+")
_WHITESPACE_RUN = re.compile(r"\s+")

#: Sentences longer than this many characters are split at whitespace so that no unit is too big to select.
MAX_SENTENCE_CHARS = 2000


def _empty() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.int64)


def _pieces_between(text: str, cuts: list[int]) -> np.ndarray:
    """Spans between consecutive cut positions, with whitespace stripped; empty pieces dropped."""
    spans: list[tuple[int, int]] = []
    bounds = [0, *cuts, len(text)]
    for start, end in zip(bounds[:-1], bounds[1:]):
        piece = text[start:end]
        stripped_left = len(piece) - len(piece.lstrip())
        stripped_right = len(piece) - len(piece.rstrip())
        s, e = start + stripped_left, end - stripped_right
        if e > s:
            spans.append((s, e))
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2) if spans else _empty()


def _split_long(text: str, spans: np.ndarray, max_chars: int) -> np.ndarray:
    """Split spans longer than ``max_chars`` at the last whitespace before the limit (or hard, if none)."""
    if len(spans) == 0 or int((spans[:, 1] - spans[:, 0]).max()) <= max_chars:
        return spans
    out: list[tuple[int, int]] = []
    for s, e in spans.tolist():
        while e - s > max_chars:
            cut = text.rfind(" ", s + max_chars // 2, s + max_chars)
            cut = cut if cut > s else s + max_chars
            piece_end = cut
            while piece_end > s and text[piece_end - 1].isspace():
                piece_end -= 1
            out.append((s, piece_end))
            s = cut
            while s < e and text[s].isspace():
                s += 1
        if e > s:
            out.append((s, e))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def sentence_spans(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> np.ndarray:
    """Sentence boundaries (a line break ends a sentence unless the next line starts in lower case).

    Args:
        text: Any string.
        max_chars: Sentences longer than this are split at whitespace.

    Returns:
        ``(n, 2)`` int64 array of ``[start, end)`` offsets.

    Example:
        >>> sentence_spans("Dr. Who came. He left.").tolist()
        [[0, 13], [14, 22]]
    """
    cuts = [m.end() for m in _SENTENCE_BREAK.finditer(text)]
    return _split_long(text, _pieces_between(text, cuts), max_chars)


def paragraph_spans(text: str) -> np.ndarray:
    """Paragraphs are separated by blank lines; a text without any blank line uses its lines as paragraphs.

    Example:
        >>> paragraph_spans("A a.\\nA b.\\n\\nB a.").tolist()
        [[0, 9], [11, 15]]
    """
    pattern = _PARAGRAPH_BREAK if _PARAGRAPH_BREAK.search(text) else _LINE_BREAK
    return _pieces_between(text, [m.end() for m in pattern.finditer(text)])


def word_spans(text: str) -> np.ndarray:
    """Whitespace-separated words (the units of keyword granularity).

    Example:
        >>> word_spans(" to be ").tolist()
        [[1, 3], [4, 6]]
    """
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2) if spans else _empty()


def chunk_spans(
    text: str, token_offsets: np.ndarray, chunk_tokens: int, sentences: np.ndarray | None = None
) -> np.ndarray:
    """Consecutive sentences grouped into chunks of at most ``chunk_tokens`` tokens, never across paragraphs.

    A single sentence longer than ``chunk_tokens`` forms its own chunk.

    Args:
        text: The text.
        token_offsets: ``(n, 2)`` character offsets of the critic's tokens (used to measure sentences).
        chunk_tokens: Target chunk size in critic tokens (>= 1).
        sentences: Precomputed :func:`sentence_spans`, if any.

    Example:
        >>> import numpy as np
        >>> text = "A b. C d. E f."
        >>> offsets = np.array([[0, 1], [2, 4], [5, 6], [7, 9], [10, 11], [12, 14]])
        >>> chunk_spans(text, offsets, chunk_tokens=4).tolist()
        [[0, 9], [10, 14]]
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    sents = sentence_spans(text) if sentences is None else sentences
    if len(sents) == 0:
        return _empty()
    paragraph_of = np.searchsorted(paragraph_spans(text)[:, 0], sents[:, 0], side="right")
    token_starts = token_offsets[:, 0] if len(token_offsets) else np.zeros(0, dtype=np.int64)
    first = np.searchsorted(token_starts, sents[:, 0], side="left")
    last = np.searchsorted(token_starts, sents[:, 1], side="left")
    sizes = (last - first).tolist()
    chunks: list[tuple[int, int]] = []
    start, size = int(sents[0, 0]), 0
    end = int(sents[0, 1])
    for i, (s, e) in enumerate(sents.tolist()):
        new_paragraph = i > 0 and paragraph_of[i] != paragraph_of[i - 1]
        if i > 0 and (new_paragraph or size + sizes[i] > chunk_tokens):
            chunks.append((start, end))
            start, size = s, 0
        end = e
        size += sizes[i]
    chunks.append((start, end))
    return np.asarray(chunks, dtype=np.int64)


def units_for(granularity: str, text: str, token_offsets: np.ndarray, chunk_tokens: int) -> np.ndarray:
    """The units of one granularity: ``token`` -> words, ``sentence``, ``paragraph``, ``chunk``."""
    if granularity == "token":
        return word_spans(text)
    if granularity == "sentence":
        return sentence_spans(text)
    if granularity == "paragraph":
        return paragraph_spans(text)
    if granularity == "chunk":
        return chunk_spans(text, token_offsets, chunk_tokens)
    raise ValueError(f"unknown granularity {granularity!r}; expected one of 'token', 'sentence', 'paragraph', 'chunk'")


def collapse_whitespace(text: str) -> str:
    """Whitespace runs collapsed to one space (for display only)."""
    return _WHITESPACE_RUN.sub(" ", text).strip()


_CLAUSE_BREAK = re.compile(r"[,;:，；：、،؛]+\s*")


def clause_spans(text: str) -> np.ndarray:
    """Clauses: pieces of ``text`` cut after commas, semicolons and colons (Latin, CJK and Arabic forms).

    Example:
        >>> clause_spans("First, a pause; then: the end").tolist()
        [[0, 6], [7, 15], [16, 21], [22, 29]]
    """
    return _pieces_between(text, [m.end() for m in _CLAUSE_BREAK.finditer(text)])
