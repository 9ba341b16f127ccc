from __future__ import annotations

import numpy as np

from cprs_integrations.engine.budget import resolve_token_counter
from cprs_integrations.engine.selection import (
    gap_fill,
    select_by_tags,
    select_under_budgets,
    tag_spans,
    unit_scores,
)
from cprs_integrations.models.base import TAG_B, TAG_E, TAG_I, TAG_O

B, I, O, E = TAG_B, TAG_I, TAG_O, TAG_E  # noqa: E741 (the tag names)


def one_hot(tags: list[int]) -> np.ndarray:
    probs = np.full((len(tags), 4), 0.01, dtype=np.float32)
    probs[np.arange(len(tags)), tags] = 0.97
    return probs


def test_gap_fill_follows_the_official_rule():
    tags = np.array([B, O, O, I, O, E, O, O])
    assert gap_fill(tags, 20).tolist() == [B, I, I, I, I, E, O, O]
    # a gap of gap_fill_tokens or more stops the walk
    tags = np.array([B, O, O, O, I])
    assert gap_fill(tags, 3).tolist() == [B, O, O, O, I]
    # filling never runs through a B
    tags = np.array([B, O, B, O, I])
    assert gap_fill(tags, 20).tolist() == [B, O, B, I, I]


def test_tag_spans_start_at_non_o_and_end_at_o_or_b():
    assert tag_spans(np.array([O, I, I, O, B, I, B, E, O])) == [(1, 3), (4, 6), (6, 8)]


def test_select_by_tags_drops_short_spans_and_widens_to_units():
    offsets = np.array([[i * 2, i * 2 + 1] for i in range(12)])
    probs = one_hot([O, B, I, I, I, I, E, O, O, B, E, O])
    sel = select_by_tags(probs, offsets, None, min_span_tokens=4)
    assert sel.spans.tolist() == [[2, 13]]  # the 2-token span is dropped
    units = np.array([[0, 7], [8, 23]])
    sel = select_by_tags(probs, offsets, units, min_span_tokens=1)
    assert sel.spans.tolist() == [[0, 23]]


def test_unit_scores_average_keep_log_odds():
    offsets = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    probs = np.zeros((4, 4), dtype=np.float32)
    probs[:, O] = [0.1, 0.1, 0.9, 0.9]
    probs[:, I] = 1 - probs[:, O]
    scores = unit_scores(np.array([[0, 3], [4, 7], [8, 9]]), offsets, probs)
    assert np.allclose(scores[:2], [0.9, 0.1], atol=1e-6)
    assert scores[2] == 0.0  # no tokens


def test_budget_selection_takes_best_units_in_input_order_and_never_exceeds_budget():
    count = resolve_token_counter("o200k_base")
    text = "Alpha one. Beta two. Gamma three. Delta four."
    units = np.array([[0, 10], [11, 20], [21, 33], [34, 45]])
    scores = np.array([0.1, 0.9, 0.2, 0.8])
    [sel] = select_under_budgets([text], [units], [scores], [8], [0], count, " ... ")
    kept = [text[s:e] for s, e in sel.spans]
    assert kept == ["Beta two.", "Delta four."]
    assert count(" ... ".join(kept)) <= 9


def test_adjacent_units_merge_into_one_exact_slice():
    count = resolve_token_counter("o200k_base")
    text = "One. Two. Three."
    units = np.array([[0, 4], [5, 9], [10, 16]])
    [sel] = select_under_budgets([text], [units], [np.array([0.9, 0.8, 0.1])], [5], [0], count, " | ")
    assert sel.spans.tolist() == [[0, 9]]


def test_global_budget_spans_texts_and_per_text_budget_splits_it():
    count = resolve_token_counter("o200k_base")
    texts = ["Red apple. Green pear.", "Blue sky. Grey cloud."]
    units = [np.array([[0, 10], [11, 22]]), np.array([[0, 9], [10, 21]])]
    scores = [np.array([0.9, 0.8]), np.array([0.1, 0.2])]
    global_sel = select_under_budgets(texts, units, scores, [8], [0, 0], count, "")
    assert len(global_sel[1].spans) == 0 and len(global_sel[0].spans) == 1
    per_text = select_under_budgets(texts, units, scores, [3, 3], [0, 1], count, "")
    assert all(len(s.spans) == 1 for s in per_text)
