"""Budgets are used as fully as the units allow, ratio 1.0 is the identity, and nothing is dropped silently."""

from __future__ import annotations

import math

import pytest

from cprs_integrations import CompressionOptions
from cprs_integrations.engine.budget import resolve_token_counter

COUNT = resolve_token_counter("o200k_base")
GRANULARITIES = ["token", "sentence", "paragraph", "chunk"]
SEVEN = (
    "Mira Olsen founded the Tallow Bay rowing club in 1987. It trains on the north lake every morning.\n\n"
    "The club owns twelve boats. Two of them were built by Olsen herself. Members pay a small yearly fee.\n\n"
    "A zebra statue stands at the gate. Visitors often photograph it before the races."
)
# Many small units: 40 paragraphs of two short sentences.
MANY = "\n\n".join(
    f"Station {i} logs the river level at dawn. The zebra crossing {i} opens at noon." for i in range(40)
)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_ratio_one_returns_the_text_exactly(fake_engine, granularity):
    text = "  " + SEVEN + "\n"
    [res] = fake_engine.compress("zebra", [text], granularity=granularity, target_ratio=1.0)
    assert res.text == text and [(s.start, s.end) for s in res.spans] == [(0, len(text))]
    [res] = fake_engine.compress("zebra", [text], granularity=granularity, target_tokens=2 * COUNT(text))
    assert res.text == text
    # Also per text and across several texts.
    results = fake_engine.compress("zebra", [SEVEN, MANY], granularity=granularity, target_ratio=1.0)
    assert [r.text for r in results] == [SEVEN, MANY]


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6, 0.9])
def test_budget_is_filled_to_at_least_90_percent(fake_engine, granularity, ratio):
    [res] = fake_engine.compress("zebra", [MANY], granularity=granularity, target_ratio=ratio, chunk_tokens=24)
    budget = math.floor(ratio * COUNT(MANY) + 1e-9)
    assert res.compressed_tokens <= budget
    assert res.compressed_tokens >= 0.9 * budget, (res.compressed_tokens, budget)


def test_separator_is_charged_only_where_written(fake_engine):
    # Budget = the whole text minus one token: every sentence but the weakest fits, joined without separators
    # where they are adjacent; before the fix each sentence after the first was charged a separator.
    text = "Zebra one. Zebra two. Zebra three. Plain four. Zebra five."
    [res] = fake_engine.compress("zebra", [text], target_tokens=COUNT(text) - 1, separator=" ... ")
    assert res.text == "Zebra one. Zebra two. Zebra three. ... Zebra five."
    assert res.compressed_tokens <= COUNT(text) - 1


def test_a_unit_longer_than_the_budget_falls_back_to_finer_units(fake_engine):
    # One 100-token sentence: at the default ratio 0.2 the sentence does not fit; clauses do.
    sentence = (
        "The committee of the Harlow district, after three long evenings of debate about the old mill, the "
        "zebra enclosure near the bridge, the schedule of the summer fair and the repairs needed on the roof of "
        "the library, finally agreed that the zebra enclosure would move to the east meadow, that the fair would "
        "open a week later than usual, and that the library roof would be fixed before the autumn rains began."
    )
    assert COUNT(sentence) > 70
    [res] = fake_engine.compress("zebra enclosure", [sentence])
    budget = math.floor(0.2 * COUNT(sentence) + 1e-9)
    assert res.text, "a positive budget over existing text must not give an empty result"
    assert res.granularity == "sentence" and res.granularity_used in ("clause", "token")
    assert 0 < res.compressed_tokens <= budget
    assert "zebra" in res.text
    assert res.empty_reason is None
    # With a budget too small even for clauses, words are used.
    [tiny] = fake_engine.compress("zebra enclosure", [sentence], target_tokens=4)
    assert tiny.granularity_used == "token" and 0 < tiny.compressed_tokens <= 4 and "zebra" in tiny.text


def test_fallback_takes_the_best_unit_across_texts_with_one_budget(fake_engine):
    long_relevant = "The zebra keeper, who has worked here for years, feeds the zebra, cleans the yard, and sings."
    unrelated = "Rain fell over the harbour, the ships stayed in port, and the market closed early that day."
    results = fake_engine.compress("zebra keeper", [unrelated, long_relevant], target_tokens=8)
    assert results[0].text == "" and results[0].empty_reason == "unit_too_large"  # one long sentence
    assert results[1].text and results[1].granularity_used == "clause"


def test_score_threshold_is_a_floor_even_with_budget_left(fake_engine):
    # The fake critic gives 0.9 to query tokens and 0.05 to the rest: sentence scores are far apart.
    [res] = fake_engine.compress("zebra", [SEVEN], target_ratio=1.0, score_threshold=0.07)
    assert res.text == "A zebra statue stands at the gate."
    [empty] = fake_engine.compress("quantum", [SEVEN], target_ratio=1.0, score_threshold=0.07)
    assert empty.text == "" and empty.spans == () and empty.empty_reason == "below_score_threshold"
    # No threshold: ratio 1.0 keeps everything even for an unrelated query.
    [whole] = fake_engine.compress("quantum", [SEVEN], target_ratio=1.0)
    assert whole.text == SEVEN


def test_empty_reasons_are_documented_values(fake_engine):
    results = fake_engine.compress("zebra", ["", "   ", SEVEN], target_tokens=1, per_text_budget=True)
    assert results[0].empty_reason == "empty_text" and results[1].empty_reason == "empty_text"
    [zero] = fake_engine.compress("zebra", ["Zebra."], target_ratio=0.1)
    assert zero.text == "" and zero.empty_reason == "zero_budget"


def test_tags_mode_joins_adjacent_sentences_without_separator(fake_engine):
    text = "The zebra zebra zebra zebra zebra ran. The zebra zebra zebra zebra zebra slept. Cats nap."
    [res] = fake_engine.compress("zebra", [text], mode="tags", min_span_tokens=0)
    assert res.text == "The zebra zebra zebra zebra zebra ran. The zebra zebra zebra zebra zebra slept."
    assert len(res.spans) == 1 and " ... " not in res.text
    assert res.compressed_tokens <= res.original_tokens


def test_options_object_and_overrides_give_the_same_result(fake_engine):
    options = CompressionOptions(granularity="paragraph", target_tokens=40)
    a = fake_engine.compress("zebra", [SEVEN, MANY], options)
    b = fake_engine.compress("zebra", [SEVEN, MANY], granularity="paragraph", target_tokens=40)
    assert [r.spans for r in a] == [r.spans for r in b]
    # An override of the budget replaces the budget of the options object.
    [c] = fake_engine.compress("zebra", [MANY], options, target_ratio=0.5)
    assert c.compressed_tokens > 40


def test_a_markdown_heading_is_never_kept_bare(fake_engine):
    text = (
        "# Zebra facts\n\nStripes differ between animals. Herds graze at dawn.\n\n"
        "# Lions\n\nLions rest in the shade. They hunt at night."
    )
    for ratio in (0.2, 0.4, 0.7):
        [res] = fake_engine.compress("zebra", [text], target_ratio=ratio, lexical_weight=0)
        for span in res.span_texts:
            assert not span.lstrip().startswith("#") or "\n" in span.strip(), span
        assert "# Zebra facts" not in res.text or "Stripes differ" in res.text


def test_a_text_whose_best_unit_is_larger_than_the_budget_says_so(fake_engine):
    long_relevant = (
        "The zebra keeper, who has worked at the park for many years and knows every animal by name, "
        "feeds the zebra twice a day and cleans its yard."
    )
    short = "Rain fell. Ships stayed. Markets closed. Zebra."
    results = fake_engine.compress("zebra keeper", [short, long_relevant], target_tokens=6)
    assert results[0].text and results[1].text == ""
    assert results[1].empty_reason == "unit_too_large"
