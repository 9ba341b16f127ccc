"""Sentence and word boundaries from ICU break iterators (through ``icu4py``), as Python string offsets.

ICU implements UAX #29 with CLDR data: sentence terminators of every script (``.!?``, ``。！？``, Devanagari ``।``,
Arabic ``؟`` and ``۔``, Armenian ``։``, Ethiopic ``።``, Myanmar ``။``, Khmer ``។`` ...), no break before a lower-case
continuation or after a number's period, CLDR's list of abbreviations that do not end a sentence (``ss=standard``),
and dictionary-based word breaking for scripts without spaces (Chinese, Japanese, Thai, Lao, Khmer, Burmese).

icu4py counts in UTF-16 code units; the functions here convert to code points (Python string offsets).
"""

from __future__ import annotations

import re

import numpy as np
from icu4py.breakers import SentenceBreaker, WordBreaker

#: Locale for sentence breaks: English rules with CLDR's abbreviation suppressions ("Mr.", "approx." ...).
SENTENCE_LOCALE = "en@ss=standard"
#: Locale for word breaks (the dictionaries for Chinese, Japanese, Thai ... are used for every locale).
WORD_LOCALE = "en"

_SURROGATE = re.compile("[\ud800-\udfff]")


def _ends(breaker_type: type, text: str, locale: str) -> np.ndarray:
    """End offsets (UTF-16) of ICU's segments of ``text``."""
    try:
        breaker = breaker_type(text, locale)
    except UnicodeEncodeError:  # lone surrogates: same length in UTF-16 with U+FFFD in their place
        breaker = breaker_type(_SURROGATE.sub("\ufffd", text), locale)
    return np.fromiter((end for _, end in breaker.segments()), dtype=np.int64)


def _to_codepoints(utf16: np.ndarray, codepoints: np.ndarray) -> np.ndarray:
    """Convert UTF-16 offsets to code point offsets for a text with code points ``codepoints`` (``(n,)``)."""
    astral = codepoints > 0xFFFF
    if not astral.any():
        return utf16
    starts16 = np.arange(len(codepoints) + 1, dtype=np.int64)
    starts16[1:] += np.cumsum(astral)
    return np.searchsorted(starts16, utf16).astype(np.int64)


def _interior(breaks: np.ndarray, n: int) -> np.ndarray:
    return breaks[(breaks > 0) & (breaks < n)]


def sentence_breaks(text: str, codepoints: np.ndarray) -> np.ndarray:
    """Positions where ICU starts a new sentence, excluding 0 and ``len(text)``.

    Args:
        text: The text (any string).
        codepoints: ``(len(text),)`` its code points (only used to convert offsets when it has astral characters).

    Returns:
        ``(k,)`` int64 sorted offsets; trailing whitespace belongs to the sentence before each break.
    """
    if not text:
        return np.zeros(0, dtype=np.int64)
    return _interior(_to_codepoints(_ends(SentenceBreaker, text, SENTENCE_LOCALE), codepoints), len(text))


def word_breaks(text: str, codepoints: np.ndarray) -> np.ndarray:
    """ICU word boundaries (UAX #29 + dictionaries for scripts without spaces), excluding 0 and ``len(text)``.

    Args:
        text: The text.
        codepoints: ``(len(text),)`` its code points.

    Returns:
        ``(k,)`` int64 sorted offsets. Runs of spaces and punctuation are segments of their own.
    """
    if not text:
        return np.zeros(0, dtype=np.int64)
    return _interior(_to_codepoints(_ends(WordBreaker, text, WORD_LOCALE), codepoints), len(text))
