"""Property tests of the unit boundaries on random texts mixing scripts, emoji and Markdown."""

from __future__ import annotations

import numpy as np
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cprs_integrations.engine import segment

FRAGMENTS = [
    # Latin, abbreviations, numbers
    "The crane lifted",
    "approx. 40 crates",
    "Dr. Imre Volk",
    "Fig. 2",
    "3.14",
    "e.g. this",
    "naïve café",
    "e\u0301te\u0301",  # decomposed accents
    # CJK, Japanese, Thai, Hangul (composed and conjoining jamo)
    "我们今天去看河流",
    "東京へ行った",
    "ผมชอบกินข้าวผัด",
    "한국어 문장",
    "\u1100\u1161\u11a8\u1102\u1165",
    # Devanagari (with conjuncts and vowel signs), Arabic, Hebrew with points
    "क्षत्रिय घर गया",
    "हिन्दी",
    "هل ذهبت إلى السوق",
    "שָׁלוֹם עוֹלָם",
    # Emoji: ZWJ family, skin tones, flags, keycap, variation selector
    "👨\u200d👩\u200d👧\u200d👦",
    "👍🏽",
    "🧑🏿\u200d🚀",
    "🇫🇷🇩🇪🇯",
    "1\ufe0f\u20e3",
    "❤\ufe0f",
    # Whitespace carrying a mark, lone marks, format characters
    "\u00a0\u0301x",
    "\u0301\u0302",
    "a\u200bb",
    # Markdown
    "# A heading",
    "## Sub. heading",
    "- list item. More",
    "1. first. second",
    "[a link. text](http://a.b/c.d)",
    "![Fig. 1. A cat](img/cat.png)",
    "`code. span`",
    "| a. | b |\n|---|---|\n| c. d | e |",
    "```\ncode. x\n\ny = 2\n```",
    "> quoted. Text",
    "Title\n-----",
]
SEPARATORS = [" ", "  ", "\n", "\n\n", ". ", "? ", "! ", "。", "।", "؟ ", "۔ ", ", ", "; ", "，", "\t", ""]
EXTRA = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x85\u2028\u2029"), max_size=4
)
TEXTS = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.sampled_from(SEPARATORS), EXTRA), min_size=0, max_size=24
).map("".join)
GRAPHEME = regex.compile(r"\X")


def _grapheme_boundaries(text: str) -> set[int]:
    return {0} | {m.end() for m in GRAPHEME.finditer(text)}


def _check_units(text: str, spans: np.ndarray, start: int = 0, end: int | None = None) -> None:
    end = len(text) if end is None else end
    assert spans.dtype == np.int64 and spans.ndim == 2 and spans.shape[1] == 2
    flat = spans.reshape(-1)
    assert np.all(spans[:, 1] > spans[:, 0]), "empty unit"
    assert np.all(flat[1:] >= flat[:-1]), "units overlap or are out of order"
    assert len(spans) == 0 or (spans[0, 0] >= start and spans[-1, 1] <= end)
    covered = np.zeros(len(text), dtype=bool)
    for s, e in spans.tolist():
        covered[s:e] = True
        clusters = GRAPHEME.findall(text[s:e])
        assert not clusters[0].isspace() and not clusters[-1].isspace(), f"unit not stripped: {text[s:e]!r}"
    missing = [i for i in range(start, end) if not covered[i] and not text[i].isspace()]
    assert not missing, f"non-whitespace characters outside every unit: {[text[i] for i in missing]!r}"
    boundaries = _grapheme_boundaries(text)
    bad = sorted(set(flat.tolist()) - boundaries)
    assert not bad, f"offsets inside a grapheme cluster: {bad} in {text!r}"


def _cost(unit: str) -> int:
    return sum(1 if ord(c) < 128 else 3 for c in unit)


def _contents(text: str, spans: np.ndarray) -> list[str]:
    return [text[s:e].replace("\r\n", "\n").replace("\r", "\n") for s, e in spans.tolist()]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_units_are_disjoint_cover_the_text_and_respect_graphemes(text):
    for spans in (
        segment.sentence_spans(text),
        segment.sentence_spans(text, max_chars=40),
        segment.paragraph_spans(text),
        segment.word_spans(text),
        segment.clause_spans(text),
    ):
        _check_units(text, spans)
    for s, e in segment.sentence_spans(text, max_chars=40).tolist():
        clusters = GRAPHEME.findall(text[s:e])
        # A cut moves to the next grapheme boundary, so a unit may pass the limit by at most one cluster.
        assert _cost(text[s:e]) <= 40 + max(_cost(c) for c in clusters), text[s:e]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_clauses_and_words_inside_each_sentence(text):
    for s, e in segment.sentence_spans(text).tolist():
        _check_units(text, segment.clause_spans(text, s, e), s, e)
        _check_units(text, segment.word_spans(text, s, e), s, e)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS)
def test_crlf_cr_and_lf_give_the_same_units(text):
    variants = [text, text.replace("\n", "\r\n"), text.replace("\n", "\r")]
    for unit_fn in (segment.sentence_spans, segment.paragraph_spans, segment.word_spans):
        expected = _contents(text, unit_fn(text))
        for variant in variants[1:]:
            assert _contents(variant, unit_fn(variant)) == expected, unit_fn.__name__
