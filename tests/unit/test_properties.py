"""Property tests: output made of input slices in input order; budget never exceeded; same input, same output."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cprs_integrations import CPRSEngine
from cprs_integrations.engine.budget import resolve_token_counter
from tests.unit.fakes import KeywordCritic

COUNT = resolve_token_counter("o200k_base")
WORDS = st.sampled_from(
    ["zebra", "river", "bread", "the", "a", "Museum", "42", "é", "日本", "🙂", "\n", "\n\n", ". ", "! "]
)
TEXTS = st.one_of(
    st.lists(WORDS, max_size=80).map(" ".join),
    st.text(max_size=300),
)


@pytest.fixture(scope="module")
def engine(minilm_tokenizer) -> CPRSEngine:
    return CPRSEngine(KeywordCritic(minilm_tokenizer, window_tokens=24, batch_size=4))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(TEXTS, min_size=1, max_size=4),
    ratio=st.floats(min_value=0.01, max_value=1.0),
    granularity=st.sampled_from(["token", "sentence", "paragraph", "chunk"]),
    per_text=st.booleans(),
)
def test_output_is_input_slices_in_order_and_budget_holds(engine, texts, ratio, granularity, per_text):
    results = engine.compress(
        "zebra river", texts, granularity=granularity, target_ratio=ratio, per_text_budget=per_text
    )
    assert len(results) == len(texts)
    for text, res in zip(texts, results):
        assert res.source is text
        previous_end = 0
        for span in res.spans:
            assert previous_end <= span.start < span.end <= len(text)
            previous_end = span.end
        assert res.text == res.separator.join(text[s.start : s.end] for s in res.spans)
        assert res.compressed_tokens == (COUNT(res.text) if res.text else 0)
    if per_text:
        assert all(r.compressed_tokens <= math.floor(ratio * r.original_tokens + 1e-9) for r in results)
    else:
        total = sum(r.original_tokens for r in results)
        assert sum(r.compressed_tokens for r in results) <= math.floor(ratio * total + 1e-9)
    again = engine.compress("zebra river", texts, granularity=granularity, target_ratio=ratio, per_text_budget=per_text)
    assert [r.spans for r in again] == [r.spans for r in results]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, granularity=st.sampled_from(["token", "sentence", "paragraph"]))
def test_tags_mode_output_is_made_of_input_slices(engine, text, granularity):
    [res] = engine.compress("zebra", [text], mode="tags", granularity=granularity, min_span_tokens=0)
    for span in res.spans:
        assert 0 <= span.start < span.end <= len(text)
    assert res.text == res.separator.join(res.span_texts)
