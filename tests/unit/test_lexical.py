from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from cprs_integrations.engine import segment
from cprs_integrations.engine.lexical import bm25, fused_priorities, paragraph_headings, unit_documents, words, zscore

CORPUS = [
    "The red fox jumps over the lazy dog.",
    "A blue bird sings the same song every morning, the the.",
    "red red paint and a fox",
    "nothing to see here",
    "",
    "Fox News reported on the fox.",
]


@pytest.mark.parametrize("query", ["the red fox", "fox fox song", "unknown words only", "the"])
def test_bm25_equals_rank_bm25(query):
    expected = BM25Okapi([words(d) for d in CORPUS]).get_scores(words(query))
    np.testing.assert_allclose(bm25(query, CORPUS), expected, rtol=1e-12)


def test_bm25_of_nothing_is_zeros():
    assert bm25("fox", []).shape == (0,)
    assert bm25("fox", ["", "  "]).tolist() == [0.0, 0.0]


def test_zscore_handles_minus_inf_and_constants():
    assert zscore(np.array([2.0, 2.0])).tolist() == [0.0, 0.0]
    z = zscore(np.array([-np.inf, 0.0, 1.0]))
    assert np.isfinite(z).all() and z[0] == z.min()


TEXT = (
    "Zebra\nIt escaped from the zoo on Monday. Keepers found it near the river.\n\n"
    "This paragraph has one line that ends with a period.\n\n"
    "Museum history\nThe building opened in 1901."
)


def test_headings_are_short_first_lines_followed_by_more_text():
    paragraphs = segment.paragraph_spans(TEXT)
    headings = paragraph_headings(TEXT, paragraphs)
    assert [TEXT[h[0] : h[1]] if h else None for h in headings] == ["Zebra", None, "Museum history"]


def test_units_are_matched_with_their_paragraph_heading():
    units = segment.sentence_spans(TEXT)
    docs = unit_documents(TEXT, units, segment.paragraph_spans(TEXT))
    keepers = next(d for d in docs if "Keepers" in d)
    assert keepers.startswith("Zebra. Keepers found it")
    opened = next(d for d in docs if "1901" in d)
    assert opened.startswith("Museum history. ")
    assert not any(d.startswith("Zebra. Zebra") for d in docs)  # a unit that holds its heading gets no copy


def test_weight_zero_keeps_the_critic_order_and_groups_are_scored_apart():
    units = [np.array([[0, 3], [4, 7]]), np.array([[0, 3], [4, 7]])]
    texts = ["abc def", "fox fox"]
    paragraphs = [segment.paragraph_spans(t) for t in texts]
    critic = [np.array([0.1, 2.0]), np.array([5.0, -1.0])]
    alone = fused_priorities("fox", texts, units, paragraphs, critic, [0, 0], 0.0)
    assert np.argsort(np.concatenate(alone)).tolist() == np.argsort(np.concatenate(critic)).tolist()
    per_text = fused_priorities("fox", texts, units, paragraphs, critic, [0, 1], 0.0)
    np.testing.assert_allclose(per_text[0], [-1.0, 1.0])
    np.testing.assert_allclose(per_text[1], [1.0, -1.0])


DOC = (
    "The museum opened in 1901. It holds paintings from many countries.\n\n"
    "A zebra escaped from the zoo on Monday. Keepers found the zebra near the river.\n\n"
    "The bakery sells bread every morning. Its croissants are famous in town."
)


def _flat(scored):
    """The same keep probability on every token: the critic cannot tell units apart."""
    probs = np.tile(np.array([0.1, 0.2, 0.6, 0.1], dtype=np.float32), (len(scored.probs), 1))
    return replace(scored, probs=probs)


def test_lexical_weight_breaks_a_flat_critic_towards_the_query_words(fake_engine):
    [scored] = fake_engine.score("Where did the zebra escape from?", [DOC])
    flat = [_flat(scored)]
    [fused] = fake_engine.select(flat, target_tokens=12, lexical_weight=0.5)
    [alone] = fake_engine.select(flat, target_tokens=12, lexical_weight=0.0)
    assert fused.text == "A zebra escaped from the zoo on Monday."
    assert "zebra" not in alone.text
    assert fused.spans[0].score == pytest.approx(0.4)  # reported scores stay the critic's keep probability


def test_lexical_weight_is_not_used_at_token_granularity_or_in_tags_mode(fake_engine):
    scored = fake_engine.score("zebra", [DOC])
    for options in ({"granularity": "token", "target_ratio": 0.2}, {"mode": "tags"}):
        a = fake_engine.select(scored, lexical_weight=0.0, **options)
        b = fake_engine.select(scored, lexical_weight=3.0, **options)
        assert [r.spans for r in a] == [r.spans for r in b]


def test_scores_without_their_query_need_lexical_weight_zero(fake_engine):
    [scored] = fake_engine.score("zebra", [DOC])
    anonymous = replace(scored, query="")
    with pytest.raises(ValueError, match="needs the one query"):
        fake_engine.select([anonymous], target_ratio=0.3)
    mixed = [scored, replace(scored, query="bakery")]
    with pytest.raises(ValueError, match="needs the one query"):
        fake_engine.select(mixed, target_ratio=0.3)
    [res] = fake_engine.select([anonymous], target_ratio=0.3, lexical_weight=0)
    assert "zebra" in res.text


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf"), True, "0.5", None])
def test_bad_lexical_weight_is_a_clear_error(fake_engine, weight):
    with pytest.raises(ValueError, match="lexical_weight"):
        fake_engine.compress("zebra", [DOC], target_ratio=0.3, lexical_weight=weight)
