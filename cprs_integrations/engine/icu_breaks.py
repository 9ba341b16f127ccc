"""Sentence and word boundaries from ICU break iterators (through ``icu4py``), as Python string offsets.

ICU implements UAX #29 with CLDR data: sentence terminators of every script (``.!?``, ``。！？``, Devanagari ``।``,
Arabic ``؟`` and ``۔``, Armenian ``։``, Ethiopic ``።``, Myanmar ``။``, Khmer ``។`` ...), no break before a lower-case
continuation or after a number's period, CLDR's list of abbreviations that do not end a sentence (``ss=standard``),
and dictionary-based word breaking for scripts without spaces (Chinese, Japanese, Thai, Lao, Khmer, Burmese).

ICU's abbreviation filter matches its entries as *suffixes* of longer words: "CEO." ends in "O.", "MIT." in "T."
(both entries), so "He was named CEO. The firm grew." was one sentence, as was a chain statement ``VAR X = VAR
LCANT.`` with the sentence after it. A break the filter removes is therefore put back unless the whole word before
the period is itself an entry (the fix cldr-segmentation.js made for the same data: its pull request #11, "Ensure
suppressions are preceded by a space"). Whether a word is an entry is asked of ICU itself (:func:`_abbreviation`),
so the data stays CLDR's.

icu4py counts in UTF-16 code units; the functions here convert to code points (Python string offsets).
"""

from __future__ import annotations

import functools
import re

import numpy as np
from icu4py.breakers import SentenceBreaker, WordBreaker

#: Locale for sentence breaks: English rules with CLDR's abbreviation suppressions ("Mr.", "approx." ...).
SENTENCE_LOCALE = "en@ss=standard"
#: The same rules without the abbreviation filter (to find the breaks the filter removed).
UNFILTERED_LOCALE = "en"
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
    filtered = _interior(_to_codepoints(_ends(SentenceBreaker, text, SENTENCE_LOCALE), codepoints), len(text))
    if "." not in text:
        return filtered
    unfiltered = _interior(_to_codepoints(_ends(SentenceBreaker, text, UNFILTERED_LOCALE), codepoints), len(text))
    removed = np.setdiff1d(unfiltered, filtered, assume_unique=True)
    if not removed.size:
        return filtered
    restored = [int(p) for p in removed if not _abbreviation(_word_before(text, int(p)))]
    return np.union1d(filtered, np.asarray(restored, dtype=np.int64)) if restored else filtered


_WORD_BEFORE_PERIOD = re.compile(r"(\S*)\.\s*\Z")
_OPENING = re.compile(r"\A[^\w.]+")


def _word_before(text: str, position: int) -> str:
    """The word whose period ends the sentence before ``position`` (without the period and any opening
    punctuation: ``"(Mr."`` gives ``"Mr"``); empty when the text there does not end in a period."""
    found = _WORD_BEFORE_PERIOD.search(text, max(0, position - 80), position)
    return _OPENING.sub("", found.group(1)) if found else ""


@functools.lru_cache(maxsize=4096)
def _abbreviation(word: str) -> bool:
    """Whether ``word + "."`` is one of the filter's entries as a whole word: the filter holds after it, and not
    after the word without its first character (else only a shorter entry matched: "CEO" through "O").
    An empty word (no period found) keeps the filter's decision."""
    if not word:
        return True
    return _filtered(word) and (len(word) == 1 or not _filtered(word[1:]))


@functools.lru_cache(maxsize=4096)
def _filtered(word: str) -> bool:
    """Whether ICU's filter removes the break after ``word + "."`` in a plain sentence."""
    probe = f"Then {word}. Next"
    cut = len(probe) - len("Next")
    return cut in _ends(SentenceBreaker, probe, UNFILTERED_LOCALE) and cut not in _ends(
        SentenceBreaker, probe, SENTENCE_LOCALE
    )


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
