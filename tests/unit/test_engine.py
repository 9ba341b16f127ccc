from __future__ import annotations

import asyncio
import copy
import math
import threading

import pytest

from cprs_integrations import CompressionOptions, CPRSEngine
from cprs_integrations.engine.budget import resolve_token_counter
from tests.unit.fakes import KeywordCritic

COUNT = resolve_token_counter("o200k_base")
DOC = (
    "The museum opened in 1901. It holds paintings from many countries.\n\n"
    "A zebra escaped from the zoo on Monday. Keepers found the zebra near the river.\n\n"
    "The bakery sells bread every morning. Its croissants are famous in town."
)


def test_keeps_query_sentences_in_input_order(fake_engine):
    [res] = fake_engine.compress("zebra", [DOC], target_tokens=30)
    assert "zebra" in res.text
    assert res.span_texts == [DOC[s.start : s.end] for s in res.spans]
    assert all(a.end <= b.start for a, b in zip(res.spans, res.spans[1:]))
    assert res.compressed_tokens <= 30
    assert res.compressed_tokens == COUNT(res.text)
    assert res.original_tokens == COUNT(DOC)


def test_one_result_per_text_in_order_with_documented_empty_results(fake_engine):
    texts = ["", DOC, "   \n ", "zebra zebra."]
    results = fake_engine.compress("zebra", texts, target_ratio=0.5)
    assert [r.source for r in results] == texts
    assert results[0].text == "" and results[0].spans == () and results[0].original_tokens == 0
    assert results[2].text == "" and results[2].spans == ()
    assert math.isinf(results[2].ratio) or results[2].ratio == 1.0


def test_global_budget_across_texts_and_per_text_budget(fake_engine):
    texts = [DOC, DOC.replace("zebra", "horse"), DOC]
    results = fake_engine.compress("zebra", texts, target_ratio=0.2)
    total = sum(r.original_tokens for r in results)
    assert sum(r.compressed_tokens for r in results) <= math.floor(0.2 * total + 1e-9)
    per_text = fake_engine.compress("zebra", texts, target_ratio=0.2, per_text_budget=True)
    for r in per_text:
        assert r.compressed_tokens <= math.floor(0.2 * r.original_tokens + 1e-9)
    assert all(r.compressed_tokens > 0 for r in per_text)


@pytest.mark.parametrize("granularity", ["token", "sentence", "paragraph", "chunk"])
def test_every_granularity_returns_exact_slices_under_budget(fake_engine, granularity):
    [res] = fake_engine.compress("zebra river", [DOC], granularity=granularity, target_ratio=0.5)
    assert res.compressed_tokens <= math.floor(0.5 * res.original_tokens + 1e-9)
    for span in res.spans:
        assert DOC[span.start : span.end] == span.slice_of(DOC)
    assert res.text == " ... ".join(res.span_texts)
    assert res.granularity == granularity


def test_tags_mode_uses_argmax_and_no_budget(fake_engine):
    [res] = fake_engine.compress("zebra", [DOC], mode="tags", granularity="sentence", min_span_tokens=0)
    assert "zebra" in res.text and "bakery" not in res.text
    with pytest.raises(ValueError, match="no budget"):
        fake_engine.compress("zebra", [DOC], mode="tags", target_ratio=0.5)


def test_select_equals_compress(fake_engine):
    scored = fake_engine.score("zebra", [DOC, DOC])
    a = fake_engine.select(scored, target_ratio=0.3)
    b = fake_engine.compress("zebra", [DOC, DOC], target_ratio=0.3)
    assert [r.text for r in a] == [r.text for r in b]
    assert [r.spans for r in a] == [r.spans for r in b]


def test_inputs_are_not_changed(fake_engine):
    texts = [DOC, "short text."]
    before = copy.deepcopy(texts)
    fake_engine.compress("zebra", texts, target_ratio=0.5)
    assert texts == before


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"granularity": "word"}, ValueError, "granularity"),
        ({"mode": "fast"}, ValueError, "mode"),
        ({"target_ratio": 0.0}, ValueError, r"\(0, 1\]"),
        ({"target_ratio": 1.5}, ValueError, r"\(0, 1\]"),
        ({"target_ratio": float("nan")}, ValueError, r"\(0, 1\]"),
        ({"target_ratio": 0.5, "target_tokens": 10}, ValueError, "not both"),
        ({"target_tokens": 0}, ValueError, "target_tokens"),
        ({"target_tokens": 5, "separator": None}, ValueError, "separator"),
        ({"target_tokens": 5, "language": "fr"}, ValueError, "language"),
        ({"target_tokens": 5, "instruction": "  "}, ValueError, "instruction"),
        ({"target_tokens": 5, "token_counter": 3.5}, ValueError, "token_counter"),
        ({"target_tokens": 5, "per_text_budget": "no"}, ValueError, "per_text_budget"),
        ({"target_tokens": "5"}, ValueError, "target_tokens"),
        ({"target_tokens": 5, "top_n": 2}, TypeError, "top_n"),
    ],
)
def test_bad_options_are_clear_errors(fake_engine, kwargs, error, message):
    with pytest.raises(error, match=message):
        fake_engine.compress("zebra", [DOC], **kwargs)


@pytest.mark.parametrize(
    ("query", "texts", "error", "message"),
    [
        ("", [DOC], ValueError, "query"),
        ("   ", [DOC], ValueError, "query"),
        (None, [DOC], TypeError, "query"),
        ("q", DOC, TypeError, r"wrap it"),
        ("q", [DOC, None], TypeError, r"texts\[1\]"),
        ("q", [DOC, 3], TypeError, r"texts\[1\]"),
        ("q", 42, TypeError, "list of strings"),
    ],
)
def test_bad_query_or_texts_are_clear_errors(fake_engine, query, texts, error, message):
    with pytest.raises(error, match=message):
        fake_engine.compress(query, texts, target_ratio=0.5)


def test_huge_input_is_refused_with_the_limit_named(fake_critic):
    engine = CPRSEngine(fake_critic, max_input_tokens=10)
    with pytest.raises(ValueError, match="max_input_tokens=10"):
        engine.compress("zebra", [DOC], target_ratio=0.5)


def test_token_counter_callable_and_unknown_encoding(fake_engine):
    [res] = fake_engine.compress("zebra", [DOC], target_tokens=10, token_counter=lambda t: len(t.split()))
    assert len(res.text.split()) <= 10
    with pytest.raises(ValueError, match="could not be loaded"):
        fake_engine.compress("zebra", [DOC], target_tokens=10, token_counter="no_such_encoding")


def test_windows_are_batched_by_length(minilm_tokenizer):
    critic = KeywordCritic(minilm_tokenizer, window_tokens=32, batch_size=3)
    engine = CPRSEngine(critic)
    engine.compress("zebra", [DOC * 3, DOC], target_ratio=0.5)
    assert critic.batches and max(critic.batches) <= 3
    assert sum(critic.batches) >= 8


def test_out_of_memory_halves_the_batch_and_loses_nothing(minilm_tokenizer):
    reference = CPRSEngine(KeywordCritic(minilm_tokenizer, window_tokens=32, batch_size=8))
    flaky_critic = KeywordCritic(minilm_tokenizer, window_tokens=32, batch_size=8, fail_above=2)
    flaky = CPRSEngine(flaky_critic)
    texts = [DOC * 2, DOC]
    expected = reference.compress("zebra", texts, target_ratio=0.3)
    got = flaky.compress("zebra", texts, target_ratio=0.3)
    assert [r.text for r in got] == [r.text for r in expected]
    assert max(flaky_critic.batches) <= 2
    # Only the failing batch is split: the engine's batch size (everyone else's) is unchanged.
    assert flaky.batch_size == 8 and flaky.stats()["oom_splits"] > 0


def test_out_of_memory_on_a_single_window_is_a_clear_error(minilm_tokenizer):
    engine = CPRSEngine(KeywordCritic(minilm_tokenizer, window_tokens=32, batch_size=1, fail_above=0))
    with pytest.raises(RuntimeError, match="single window"):
        engine.compress("zebra", [DOC], target_ratio=0.3)


def test_replicas_give_the_same_results(minilm_tokenizer):
    critic = KeywordCritic(minilm_tokenizer, window_tokens=32, batch_size=2)
    single = CPRSEngine(critic).compress("zebra", [DOC * 3], target_ratio=0.3)
    multi_engine = CPRSEngine(critic, replicas=[critic.replicate("cpu"), critic.replicate("cpu")])
    multi = multi_engine.compress("zebra", [DOC * 3], target_ratio=0.3)
    assert [r.spans for r in multi] == [r.spans for r in single]


def test_thread_safe_same_results_as_sequential(fake_engine):
    queries = [f"zebra {i}" if i % 2 else "bakery bread" for i in range(16)]
    sequential = [fake_engine.compress(q, [DOC], target_ratio=0.3)[0].text for q in queries]
    parallel: list[str | None] = [None] * 16

    def work(i: int) -> None:
        parallel[i] = fake_engine.compress(queries[i], [DOC], target_ratio=0.3)[0].text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert parallel == sequential


def test_async_equals_sync(fake_engine):
    sync = fake_engine.compress("zebra", [DOC], target_ratio=0.3)
    asynchronous = asyncio.run(fake_engine.acompress("zebra", [DOC], target_ratio=0.3))
    assert [r.text for r in asynchronous] == [r.text for r in sync]


def test_result_dict_and_html(fake_engine):
    [res] = fake_engine.compress("zebra", [DOC], target_tokens=20)
    data = res.to_dict()
    assert data["compressed_tokens"] == res.compressed_tokens and data["spans"]
    html = res.to_html()
    assert "<mark" in html and "zebra" in html
    assert "&lt;b&gt;" in fake_engine.compress("zebra", ["<b>zebra</b> zebra."], target_tokens=20)[0].to_html()


def test_progress_bar_is_silent_for_small_calls(fake_engine, capsys):
    fake_engine.compress("zebra", [DOC], target_ratio=0.3)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_engine_options_are_validated(fake_critic):
    with pytest.raises(ValueError, match="window_tokens"):
        CPRSEngine(fake_critic, window_tokens=10_000)
    with pytest.raises(ValueError, match="batch_size"):
        CPRSEngine(fake_critic, batch_size=0)


def test_lone_surrogates_are_named_before_the_tokenizer_sees_them(fake_engine):
    with pytest.raises(ValueError, match=r"texts\[1\].*index 3"):
        fake_engine.compress("zebra", [DOC, "abc\ud800def"])
    with pytest.raises(ValueError, match="query"):
        fake_engine.compress("zeb\udc80ra", [DOC])


def test_numpy_scalars_are_accepted_as_budgets(fake_engine):
    import numpy as np

    [a] = fake_engine.compress("zebra", [DOC], target_ratio=np.float32(0.3))
    [b] = fake_engine.compress("zebra", [DOC], target_ratio=0.3)
    assert a.spans == b.spans
    [c] = fake_engine.compress("zebra", [DOC], target_tokens=np.int64(20))
    assert 0 < c.compressed_tokens <= 20


def test_an_input_that_is_surely_too_long_is_refused_before_tokenizing(fake_critic, monkeypatch):
    from cprs_integrations.engine import engine as engine_module

    engine = CPRSEngine(fake_critic, max_input_tokens=1_000)

    def never(*_args, **_kwargs):
        raise AssertionError("tokenized a text that its characters already prove too long")

    monkeypatch.setattr(engine_module, "tokenize_with_offsets", never)
    with pytest.raises(ValueError, match=r"at least .* critic tokens .*max_input_tokens=1,000"):
        engine.compress("zebra", ["word " * 50_000])


def test_a_text_mostly_unknown_to_the_critic_is_logged_once(fake_engine, caplog):
    tibetan = "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ ᎠᏂᏴᏫᏯ. " * 20  # Cherokee: not in the MiniLM vocabulary
    with caplog.at_level("WARNING"):
        fake_engine.compress("zebra", [tibetan])
        fake_engine.compress("zebra", [tibetan])
        fake_engine.compress("zebra", [DOC])
    assert sum("unknown to the critic" in r.getMessage() for r in caplog.records) == 1


def test_renamed_names_still_work_for_one_release_with_a_warning():
    from cprs_integrations.engine import lexical

    with pytest.warns(DeprecationWarning, match="moved"):
        assert lexical.DEFAULT_LEXICAL_WEIGHT == 0.5
    with pytest.warns(DeprecationWarning, match="deprecated"):
        assert lexical.check_lexical_weight(1) == 1.0


def test_tags_mode_refuses_budget_only_options(fake_engine):
    with pytest.raises(ValueError, match="score_threshold, per_text_budget and hops apply to mode='budget'"):
        fake_engine.compress("zebra", [DOC], mode="tags", score_threshold=0.5)
    options = CompressionOptions(target_tokens=100)
    assert options.merged(mode="budget").target_tokens == 100  # the same mode keeps the budget
    assert options.budgets([100]) == [100] and CompressionOptions(target_ratio=0.29).budgets([100]) == [29]


def test_the_early_length_check_never_refuses_what_fits(fake_critic):
    import random

    rng = random.Random(0)
    reads = [" ".join("".join(rng.choice("ACGT") for _ in range(150)) for _ in range(150))]  # 150 long "words"
    engine = CPRSEngine(fake_critic, max_input_tokens=1_000)
    [res] = engine.compress("ACGT", reads)  # each read is one [UNK]: 150 critic tokens, within the limit
    assert res.original_tokens > 0
