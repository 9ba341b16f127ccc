"""A text's normalized view: line endings, character classes, whitespace stripping and grapheme clusters.

Segmentation works on :attr:`TextView.norm`, a copy of the text of the same length in which ``\\r\\n`` reads
``" \\n"`` and a lone ``\\r`` (and U+0085, U+2028, U+2029) reads ``"\\n"``, so that CRLF, CR and LF inputs give the
same units while every offset still refers to the original text. Spans are ``int64`` arrays of shape ``(n, 2)``
with ``[start, end)`` character (code point) offsets.

Grapheme clusters (UAX #29, as implemented by the ``regex`` package's ``\\X``) are only looked at near characters
that can join a cluster (marks, ZWJ, emoji modifiers, regional indicators, Hangul jamo, prepended marks, CR LF);
every other position is a cluster boundary by the UAX #29 rules, so the check costs nothing on most text.
"""

from __future__ import annotations

import functools
from functools import cached_property

import numpy as np
import regex

_GRAPHEME = regex.compile(r"\X")
# Characters next to which a position may fail to be a grapheme-cluster boundary (UAX #29 GB3-GB13; LF needs no
# mark: the only rule that keeps it in a cluster, CR x LF, is caught at the CR).
_GCB_SPECIAL = regex.compile(
    r"[\r\p{GCB=Extend}\p{GCB=ZWJ}\p{GCB=SpacingMark}\p{GCB=Prepend}\p{GCB=Regional_Indicator}"
    r"\p{GCB=L}\p{GCB=V}\p{GCB=T}\p{GCB=LV}\p{GCB=LVT}]"
)
_LOWER = regex.compile(r"\p{Ll}")

# Character class bits (see :func:`char_bits`).
WHITESPACE = 1
WORD = 2  # a letter, digit or mark (part of a word)
OPENING = 4  # opening punctuation (Unicode Ps / Pi): attaches to the word after it
NO_SPACE_SCRIPT = 8  # a script written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Burmese)
GRAPHEME_SPECIAL = 16  # may join the character before or after it into one grapheme cluster
LOWER = 32  # a lower-case letter (Unicode Ll)

# Scripts whose words are not separated by spaces; ICU's dictionaries find their words.
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # kana repeat marks
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA9E0, 0xA9FF),  # Myanmar extended B
    (0xAA60, 0xAA7F),  # Myanmar extended A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x1B000, 0x1B16F),  # Kana supplement / extended
    (0x20000, 0x3FFFF),  # CJK extensions B-J
)
_LINE_END_TRANSLATION = str.maketrans({"\r": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"})


@functools.cache
def char_bits(char: str) -> int:
    """Class bits of one character: ``WHITESPACE | WORD | OPENING | NO_SPACE_SCRIPT | GRAPHEME_SPECIAL | LOWER``."""
    import unicodedata

    bits = 0
    category = unicodedata.category(char)
    if char.isspace():
        bits |= WHITESPACE
    if char.isalnum() or category[0] == "M":
        bits |= WORD
    if category in ("Ps", "Pi"):
        bits |= OPENING
    code = ord(char)
    if any(lo <= code <= hi for lo, hi in _NO_SPACE_RANGES):
        bits |= NO_SPACE_SCRIPT
    if _GCB_SPECIAL.match(char):
        bits |= GRAPHEME_SPECIAL
    if _LOWER.match(char):
        bits |= LOWER
    return bits


def normalize_line_ends(text: str) -> str:
    """``text`` with ``\\r\\n`` -> ``" \\n"`` and lone ``\\r``, U+0085, U+2028, U+2029 -> ``"\\n"`` (same length)."""
    if "\r" in text:
        text = text.replace("\r\n", " \n")
    if any(c in text for c in "\r\x85\u2028\u2029"):
        text = text.translate(_LINE_END_TRANSLATION)
    return text


class TextView:
    """Lazily computed facts about one text, shared by every segmentation of it (see :func:`view_of`).

    Attributes:
        text: The original text (offsets refer to it).
        norm: Same length as ``text``, line endings normalized (see module docstring).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.norm = normalize_line_ends(text)
        self.n = len(text)

    @cached_property
    def codepoints(self) -> np.ndarray:
        """``(n,)`` uint32 code points of the text (lone surrogates included as is)."""
        return np.frombuffer(self.text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)

    @cached_property
    def _classes(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Sorted distinct code points, their class bits, and the OR of all bits."""
        chars = sorted(set(self.text))
        cps = np.fromiter((ord(c) for c in chars), dtype=np.uint32, count=len(chars))
        bits = np.fromiter((char_bits(c) for c in chars), dtype=np.uint8, count=len(chars))
        return cps, bits, int(np.bitwise_or.reduce(bits)) if len(bits) else 0

    @property
    def any_bits(self) -> int:
        """OR of the class bits of every character in the text (to skip work a text cannot need)."""
        return self._classes[2]

    def bits_at(self, positions: np.ndarray) -> np.ndarray:
        """Class bits (uint8) of the characters at ``positions`` (``(k,)`` ints in ``[0, n)``)."""
        distinct, bits, _ = self._classes
        if len(positions) == 0:
            return np.zeros(0, dtype=np.uint8)
        return bits[np.searchsorted(distinct, self.codepoints[positions])]

    def bits_between(self, start: int, end: int) -> np.ndarray:
        """Class bits (uint8) of ``text[start:end]``, shape ``(end - start,)``."""
        return self.bits_at(np.arange(start, end))

    @cached_property
    def whitespace(self) -> np.ndarray:
        """``(n,)`` bool: ``str.isspace`` of each character."""
        cps = self.codepoints
        table = _whitespace_table()
        small = cps < len(table)
        out = np.zeros(self.n, dtype=bool)
        out[small] = table[cps[small]]
        return out

    @cached_property
    def non_whitespace_positions(self) -> np.ndarray:
        """``(k,)`` sorted positions of the non-whitespace characters (int32 unless the text is huge)."""
        return np.flatnonzero(~self.whitespace).astype(_index_dtype(self.n))

    @cached_property
    def cost_prefix(self) -> np.ndarray:
        """``(n + 1,)`` int32 (int64 if huge): ``cost_prefix[e] - cost_prefix[s]`` is the cost of ``text[s:e]``.

        An ASCII character counts 1, any other 3 (scripts outside ASCII take about one token per 1-2 characters,
        English about one per 4), so one limit keeps units of any script to a similar number of tokens.
        """
        dtype = _index_dtype(3 * self.n)
        weights = np.where(self.codepoints < 128, 1, 3).astype(dtype)
        return np.concatenate([np.zeros(1, dtype=dtype), np.cumsum(weights, dtype=dtype)])

    def costs(self, spans: np.ndarray) -> np.ndarray:
        """``(n,)`` int64 cost of each span (see :attr:`cost_prefix`)."""
        prefix = self.cost_prefix
        return (prefix[spans[:, 1]] - prefix[spans[:, 0]]).astype(np.int64)

    # ----- pieces and whitespace -----

    def strip_pieces(self, cuts: np.ndarray, start: int = 0, end: int | None = None) -> np.ndarray:
        """The pieces of ``[start, end)`` between sorted cut positions, whitespace stripped, empty ones dropped.

        Args:
            cuts: ``(k,)`` sorted int positions (those outside ``(start, end)`` are ignored).
            start: Range start.
            end: Range end (default: end of text).

        Returns:
            ``(m, 2)`` int64 spans.
        """
        end = self.n if end is None else end
        cuts = np.asarray(cuts, dtype=np.int64)
        cuts = cuts[(cuts > start) & (cuts < end)]
        bounds = np.concatenate([[start], np.unique(cuts), [end]]).astype(np.int64)
        return self.strip_spans(np.stack([bounds[:-1], bounds[1:]], axis=1))

    def strip_spans(self, spans: np.ndarray) -> np.ndarray:
        """``(m, 2)`` spans with surrounding whitespace removed; spans of whitespace only are dropped."""
        if len(spans) == 0:
            return empty_spans()
        nonws = self.non_whitespace_positions
        first = np.searchsorted(nonws, spans[:, 0], side="left")
        last = np.searchsorted(nonws, spans[:, 1], side="left") - 1
        keep = last >= first
        if not keep.any():
            return empty_spans()
        first, last = first[keep], last[keep]
        return np.stack([nonws[first], nonws[last] + 1], axis=1).astype(np.int64)

    def word_runs(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """``(m, 2)`` int64 maximal runs of non-whitespace characters inside ``[start, end)``."""
        end = self.n if end is None else end
        if end <= start:
            return empty_spans()
        nonws = ~self.whitespace[start:end]
        edges = np.diff(np.concatenate([[False], nonws, [False]]).astype(np.int8))
        starts = np.flatnonzero(edges == 1) + start
        ends = np.flatnonzero(edges == -1) + start
        return np.stack([starts, ends], axis=1).astype(np.int64)

    # ----- grapheme clusters -----

    def _special(self, positions: np.ndarray) -> np.ndarray:
        return (self.bits_at(positions) & GRAPHEME_SPECIAL) != 0

    def cluster_around(self, position: int) -> tuple[int, int]:
        """The grapheme cluster ``[a, b)`` with ``a < position < b``, or ``(position, position)`` at a boundary."""
        if position <= 0 or position >= self.n:
            return position, position
        text = self.text
        q = position
        while q > 0 and (char_bits(text[q - 1]) & GRAPHEME_SPECIAL or char_bits(text[q]) & GRAPHEME_SPECIAL):
            q -= 1
        previous = pos = q  # q is a boundary: neither neighbour can join a cluster
        while pos < position:
            previous = pos
            match = _GRAPHEME.match(text, pos)
            pos = match.end() if match and match.end() > pos else pos + 1
        return (position, position) if pos == position else (previous, pos)

    def is_boundary(self, position: int) -> bool:
        """Whether ``position`` is a grapheme-cluster boundary."""
        a, b = self.cluster_around(position)
        return a == b

    def snap(self, spans: np.ndarray) -> np.ndarray:
        """Spans widened to grapheme-cluster boundaries (starts move left, ends right); overlaps merged.

        Args:
            spans: ``(m, 2)`` sorted, disjoint spans.

        Returns:
            ``(m', 2)`` int64 spans whose every offset is a grapheme-cluster boundary.
        """
        if len(spans) == 0 or not self.any_bits & GRAPHEME_SPECIAL:
            return spans
        flat = spans.reshape(-1).astype(np.int64).copy()
        inner = np.flatnonzero((flat > 0) & (flat < self.n))
        positions = flat[inner]
        suspect = self._special(positions - 1) | self._special(positions)
        if not suspect.any():
            return spans
        for i in inner[suspect].tolist():
            a, b = self.cluster_around(int(flat[i]))
            if a != b:
                flat[i] = a if i % 2 == 0 else b
        snapped = flat.reshape(-1, 2)
        return merge_overlapping(snapped)


def merge_overlapping(spans: np.ndarray) -> np.ndarray:
    """Sorted spans with overlapping ones merged (touching ones are kept apart). ``(m, 2)`` -> ``(m', 2)``."""
    if len(spans) < 2:
        return spans.astype(np.int64)
    order = np.argsort(spans[:, 0], kind="stable")
    spans = spans[order]
    running_end = np.maximum.accumulate(spans[:, 1])
    new_group = np.concatenate([[True], spans[1:, 0] >= running_end[:-1]])
    group = np.cumsum(new_group) - 1
    starts = spans[new_group, 0]
    ends = np.zeros(len(starts), dtype=np.int64)
    np.maximum.at(ends, group, spans[:, 1])
    return np.stack([starts, ends], axis=1).astype(np.int64)


def inside(positions: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """``(k,)`` bool: which positions fall strictly inside one of the sorted, disjoint ``(m, 2)`` intervals."""
    if len(intervals) == 0 or len(positions) == 0:
        return np.zeros(len(positions), dtype=bool)
    idx = np.searchsorted(intervals[:, 0], positions, side="right") - 1
    ok = idx >= 0
    idx = np.maximum(idx, 0)
    return ok & (positions > intervals[idx, 0]) & (positions < intervals[idx, 1])


def _index_dtype(largest: int) -> type:
    """int32 for offsets up to ``largest`` when they fit (halves the memory of per-character arrays), else int64."""
    return np.int32 if largest < 2**31 - 1 else np.int64


def empty_spans() -> np.ndarray:
    """A ``(0, 2)`` int64 array."""
    return np.zeros((0, 2), dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _whitespace_table() -> np.ndarray:
    # Every character for which str.isspace() is true lies below U+3001.
    return np.array([chr(c).isspace() for c in range(0x3001)], dtype=bool)


@functools.lru_cache(maxsize=2)
def view_of(text: str) -> TextView:
    """The (cached) :class:`TextView` of ``text``; repeated segmentations of one text share its work."""
    return TextView(text)
