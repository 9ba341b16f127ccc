"""Multi-hop selection (``hops``): later passes put the best units found so far next to the query and rescore only
candidate windows; budgets, tags mode and the coarse filter keep their rules."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cprs_integrations import CompressionOptions
from cprs_integrations.engine import coarse
from cprs_integrations.engine.multi_hop import (
    CHASE_WINDOWS,
    EVIDENCE_CHARS,
    EVIDENCE_SPANS,
    candidate_windows,
    evidence_of,
    lexical_query,
)
from cprs_integrations.engine.prompts import hop_query
from cprs_integrations.engine.result import CompressionResult, KeptSpan
from tests.unit.fakes import KeywordCritic
from tests.unit.test_coarse import bag_of_words_embed

FILLER = [f"Rain fell on day {i} near mill {i % 7}." for i in range(40)]
QUERY = "Where does the kestrel point?"
FIRST_HOP = "The kestrel points to MARMOT_7 today."
SECOND_HOP = "MARMOT_7 sleeps in a north cellar."


def chain_text(n_paragraphs: int = 40, first_at: int = 5, second_at: int = 30) -> str:
    paragraphs = [FILLER[i % len(FILLER)] for i in range(n_paragraphs)]
    paragraphs[first_at] = FIRST_HOP
    paragraphs[second_at] = SECOND_HOP
    return "\n\n".join(paragraphs)


class LengthCheckingCritic(KeywordCritic):
    """The keyword critic that also records the longest sequence (prefix + window) it was given."""

    longest = 0

    def score_windows(self, layout, windows):
        from cprs_integrations.models.base import layouts_for

        for lay, window in zip(layouts_for(layout, len(windows)), windows):
            self.longest = max(self.longest, len(lay.head) + len(window) + len(lay.tail))
        return super().score_windows(layout, windows)


@pytest.fixture
def critic(minilm_tokenizer) -> LengthCheckingCritic:
    return LengthCheckingCritic(minilm_tokenizer, window_tokens=64, batch_size=8)


@pytest.fixture
def engine(critic):
    from cprs_integrations import CPRSEngine

    return CPRSEngine(critic, coarse_embedder=bag_of_words_embed)


def budget_for() -> int:
    """A budget that holds the two hops and little else."""
    from cprs_integrations.engine.budget import resolve_token_counter

    tokens = resolve_token_counter(CompressionOptions().token_counter)
    return tokens(FIRST_HOP) + tokens(SECOND_HOP) + tokens(" ... ") + 2


def test_a_second_pass_pulls_in_the_fact_the_first_one_refers_to(engine, critic):
    text = chain_text()
    budget = budget_for()
    [one] = engine.compress(QUERY, [text], target_tokens=budget)
    assert FIRST_HOP in one.text and SECOND_HOP not in one.text
    batches_before = len(critic.batches)
    [two] = engine.compress(QUERY, [text], target_tokens=budget, hops=2)
    assert FIRST_HOP in two.text and SECOND_HOP in two.text
    assert two.compressed_tokens <= budget
    assert two.timings["hops"] == 2
    windows = int(two.timings["windows"])
    assert 1 <= two.timings["windows_rescored"] < windows, "only candidate windows are scored again"
    assert sum(critic.batches[batches_before:]) == windows + two.timings["rows_rescored"]
    assert two.timings["rows_rescored"] >= two.timings["windows_rescored"]
    assert critic.longest <= engine.window_tokens


def test_one_hop_is_the_single_pass(engine, critic):
    text = chain_text()
    [default] = engine.compress(QUERY, [text], target_ratio=0.1)
    batches = len(critic.batches)
    [one] = engine.compress(QUERY, [text], target_ratio=0.1, hops=1)
    assert one.text == default.text and one.spans == default.spans
    assert "hops" not in one.timings and "windows_rescored" not in one.timings
    assert sum(critic.batches[batches:]) == one.timings["windows"]


def test_passes_stop_when_the_evidence_no_longer_changes(engine):
    text = chain_text()
    [four] = engine.compress(QUERY, [text], target_tokens=budget_for(), hops=4)
    assert SECOND_HOP in four.text
    assert four.timings["hops"] < 4, "the third pass found the same evidence as the second: no fourth pass"


def test_score_then_select_equals_compress_and_async_equals_sync(engine):
    text = chain_text()
    budget = budget_for()
    [compressed] = engine.compress(QUERY, [text], target_tokens=budget, hops=2)
    [scored] = engine.score(QUERY, [text], target_tokens=budget, hops=2)
    [selected] = engine.select([scored], target_tokens=budget, hops=2)
    [async_result] = asyncio.run(engine.acompress(QUERY, [text], target_tokens=budget, hops=2))
    assert selected.spans == compressed.spans == async_result.spans


def test_several_texts_share_the_evidence_and_keep_input_order(engine):
    first, second = chain_text(second_at=30), "\n\n".join(FILLER[:10])
    texts = [second, first, "  "]
    results = engine.compress(QUERY, texts, target_tokens=60, hops=2)
    assert [r.source for r in results] == texts
    assert SECOND_HOP in results[1].text
    assert results[2].text == "" and results[2].empty_reason == "empty_text"


def test_a_second_hop_the_coarse_filter_skipped_is_read(monkeypatch, engine):
    """The second hop shares no word with the query: the coarse filter skips its window; the evidence's key term
    brings it back."""
    monkeypatch.setattr(coarse, "COARSE_AUTO_MIN_TOKENS", 2048)
    monkeypatch.setattr(coarse, "COARSE_MIN_TOKENS", 256)
    text = chain_text(n_paragraphs=300, first_at=20, second_at=250)
    budget = budget_for()
    [scored] = engine.score(QUERY, [text], target_tokens=budget)
    second = text.index(SECOND_HOP)
    unread = np.isnan(scored.probs[:, 2])
    assert unread[(scored.offsets[:, 0] >= second) & (scored.offsets[:, 0] < second + len(SECOND_HOP))].all()
    [one] = engine.compress(QUERY, [text], target_tokens=budget)
    [two] = engine.compress(QUERY, [text], target_tokens=budget, hops=2)
    assert one.timings["windows_scored"] < two.timings["windows_scored"] < two.timings["windows"]
    assert FIRST_HOP in two.text and SECOND_HOP in two.text
    [rescored] = engine.score(QUERY, [text], target_tokens=budget, hops=2)
    assert not np.isnan(rescored.probs[:, 2][rescored.offsets[:, 0] == second]).any()


def test_hops_may_read_every_window_the_coarse_filter_skipped(monkeypatch, engine):
    """When the later passes read all the skipped windows, every window has its scores (no stale mask)."""
    from cprs_integrations.engine import engine as engine_module

    monkeypatch.setattr(coarse, "COARSE_AUTO_MIN_TOKENS", 2048)
    monkeypatch.setattr(coarse, "COARSE_MIN_TOKENS", 256)
    monkeypatch.setattr(engine_module, "candidate_windows", lambda windows, *args: list(range(len(windows))))
    text = chain_text(n_paragraphs=300, first_at=20, second_at=250)
    [first] = engine.score(QUERY, [text], target_ratio=0.05)
    assert np.isnan(first.probs[:, 2]).any()
    [scored] = engine.score(QUERY, [text], target_ratio=0.05, hops=2)
    assert scored.probs.shape == first.probs.shape and not np.isnan(scored.probs).any()
    [result] = engine.compress(QUERY, [text], target_ratio=0.05, hops=2)
    assert result.timings["windows_scored"] == result.timings["windows"]
    assert result.spans == engine.select([scored], target_ratio=0.05, hops=2)[0].spans


def test_long_evidence_cuts_windows_into_pieces_that_fit(engine, critic):
    """Evidence fills the prefix: the candidate windows are scored in pieces, none longer than a window."""
    long_fact = "The kestrel points to MARMOT_7 and " + ", ".join(f"item{i}" for i in range(60)) + "."
    text = "\n\n".join([long_fact, *FILLER[:30], SECOND_HOP])
    [two] = engine.compress(QUERY, [text], target_ratio=0.3, hops=2)
    assert two.timings["rows_rescored"] > two.timings["windows_rescored"] >= 1
    assert critic.longest <= engine.window_tokens


def test_texts_kept_whole_need_no_second_pass(engine, critic):
    text = chain_text()
    batches = len(critic.batches)
    [whole] = engine.compress(QUERY, [text], target_ratio=1.0, hops=3)
    assert whole.text == text and "hops" not in whole.timings
    assert sum(critic.batches[batches:]) == whole.timings["windows"]


@pytest.mark.parametrize("hops", [0, 5, 1.5, "2", True, None])
def test_hops_must_be_an_integer_from_1_to_4(hops):
    with pytest.raises(ValueError, match="hops"):
        CompressionOptions(hops=hops)


def test_hops_are_refused_in_tags_mode():
    with pytest.raises(ValueError, match="hops"):
        CompressionOptions(mode="tags", hops=2)


def _result(source: str, spans: list[tuple[int, int, float]]) -> CompressionResult:
    kept = [KeptSpan(s, e, score) for s, e, score in spans]
    return CompressionResult(
        text=" ... ".join(source[s:e] for s, e, _ in spans),
        spans=kept,
        source=source,
        original_tokens=100,
        compressed_tokens=10,
        granularity="sentence",
        mode="budget",
        separator=" ... ",
    )


def test_evidence_is_the_best_spans_within_the_limits():
    source = "Alpha one.  Beta\ntwo. " + "Gamma " * 20 + "end."
    gamma = source.index("Gamma")
    result = _result(source, [(0, 10, 0.4), (12, 21, 0.9), (gamma, len(source), 0.5)])
    evidence = evidence_of([result]).spans
    assert evidence[0] == "Beta two."  # best first, whitespace normalised
    assert evidence[1].startswith("Gamma Gamma") and len(evidence) == 2, "0.4 < EVIDENCE_MIN_SCORE: not evidence"
    assert sum(len(e) for e in evidence) <= EVIDENCE_CHARS
    assert evidence_of([_result("", [])]).spans == []
    assert evidence_of([_result(source, [(0, 10, 0.1)])]).spans == ["Alpha one."], "the best span even when weak"
    long = "word " * 500
    [cut] = evidence_of([_result(long, [(0, len(long), 0.9)])]).spans
    assert len(cut) == EVIDENCE_CHARS, "a first span longer than the limit is cut"
    many = _result("abcdefghij" * 3, [(i, i + 2, 0.5) for i in range(0, 30, 3)])
    assert len(evidence_of([many]).spans) == EVIDENCE_SPANS


def test_evidence_is_what_links_to_a_rare_term_of_the_query():
    """A decoy chain's links look as much like answers as the true ones (here they score higher): when the query
    names a rare term, only the kept spans linked to it through rare terms are evidence, best first."""
    true = ["VAR QA = 58271.", "VAR QB = VAR QA."]
    decoy = ["VAR QX = 11111.", "VAR QY = VAR QX."]
    source = " ".join([decoy[1], true[1], decoy[0], true[0], "Filler words here."])
    spans = [
        (source.index(t), source.index(t) + len(t), score) for t, score in zip(decoy + true, [0.99, 0.98, 0.7, 0.6])
    ]
    result = _result(source, sorted(spans))
    assert evidence_of([result], "Which variables equal 58271?") == (["VAR QA = 58271.", "VAR QB = VAR QA."], True)
    assert not evidence_of([result], "Which variables are set?").linked
    assert evidence_of([result], "Which variables are set?").spans[:2] == decoy, "no rare term in the query: by score"
    assert evidence_of([result], "Which variables equal 424242?").spans[:2] == decoy, "no kept span shares the term"
    common = _result(source + " 58271" * CHASE_WINDOWS, sorted(spans))
    assert evidence_of([common], "Which variables equal 58271?").spans[:2] == decoy, "a frequent term links nothing"


def test_later_passes_fuse_bm25_with_linked_evidence_only(engine):
    """When the evidence is linked to a rare term of the query, the scores answer the query with its evidence:
    ``TokenScores.query`` says so and budget mode's BM25 reads it (select on the returned scores equals compress).
    Unlinked evidence (a question in prose) leaves BM25 on the query alone."""
    asked = "Where does KESTREL_4 point?"
    first = "KESTREL_4 points to MARMOT_7 today."
    text = chain_text().replace(FIRST_HOP, first)
    budget = budget_for()
    [one] = engine.score(asked, [text], target_tokens=budget)
    [two] = engine.score(asked, [text], target_tokens=budget, hops=2)
    assert one.query == asked
    assert two.query == lexical_query(asked, [first]) == f"{asked} kestrel_4 marmot_7"
    [compressed] = engine.compress(asked, [text], target_tokens=budget, hops=2)
    assert engine.select([two], target_tokens=budget)[0].spans == compressed.spans
    [prose] = engine.score(QUERY, [chain_text()], target_tokens=budget, hops=2)
    assert prose.query == QUERY


def test_candidates_are_windows_with_kept_spans_and_rare_evidence_terms():
    words = ["aaaa", "ky_1", "bbbb", "cccc", "ky_1", "dddd"] + ["cm_2", "eeee"] * 6
    source = " ".join(words)
    offsets = np.asarray([(5 * i, 5 * i + 4) for i in range(len(words))], dtype=np.int64)
    windows = [(0, i, i + 1) for i in range(len(words))]  # one word per window
    kept = _result(source, [(15, 19, 0.9)])  # "cccc"
    found = candidate_windows(windows, [offsets], [kept], "query", ["aaaa ky_1 cm_2"])
    assert found == [1, 3, 4], "the kept span's window and both windows of the rare key term, in order"
    assert not {i for i, w in enumerate(words) if w == "cm_2"} & set(found), "in 6 windows: not chased"
    assert candidate_windows(windows, [offsets], [kept], "what about ky_1?", ["ky_1"]) == [3], "asked: not chased"


def test_hop_query_joins_the_evidence():
    assert hop_query("Q?", []) == "Q?"
    assert hop_query("Q?", ["A  b.", "C."]) == "Q? Known facts: A b. C."
