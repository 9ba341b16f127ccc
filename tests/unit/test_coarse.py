"""The coarse filter: which windows the critic reads, and that selection never keeps what it did not read."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cprs_integrations import CompressionOptions
from cprs_integrations.engine import coarse
from cprs_integrations.engine.lexical import words
from cprs_integrations.engine.result import TokenScores
from cprs_integrations.engine.segment import sentence_spans, word_spans
from tests.unit.fakes import KeywordCritic


def bag_of_words_embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for the static model: hashed bag of words, L2-normalised."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, text in enumerate(texts):
        for w in words(text):
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


NOISE = [
    f"Paragraph {i} talks about gardens and weather and the long history of rivers near town number {i % 7}."
    for i in range(200)
]


def test_key_terms_are_numbers_identifiers_and_quoted_phrases():
    assert coarse.key_terms("What is the magic number for wild-frog?") == ["wild-frog"]
    assert coarse.key_terms('Find "blue moon", user_id and the value 58271 in getUser') == [
        "blue moon",
        "user_id",
        "58271",
        "getuser",
    ]
    assert coarse.key_terms("Who founded the company?") == []


def test_windows_to_keep_follows_the_budget_with_margin_and_floor(monkeypatch):
    monkeypatch.undo()  # the shipped thresholds
    short = coarse.COARSE_AUTO_MIN_TOKENS - 1
    assert coarse.windows_to_keep(0.1, 70, short) == 70
    assert coarse.windows_to_keep(0.1, 1000, 500_000) == int(np.ceil(coarse.COARSE_MARGIN * 0.1 * 1000))
    assert coarse.windows_to_keep(0.001, 1000, 500_000) == int(np.ceil(coarse.COARSE_MIN_TOKENS / 500))
    assert coarse.windows_to_keep(1.0, 1000, 500_000) == 1000
    # a decoder critic's 8K-token windows: the same rule in tokens
    assert coarse.windows_to_keep(0.1, 16, 16 * 8192) == int(np.ceil(coarse.COARSE_MARGIN * 0.1 * 16))


def test_exact_matches_are_kept_and_a_chain_is_followed_across_windows():
    windows = list(NOISE)
    chain = {
        17: "VAR QPWOE = 58271.",
        90: "VAR XKCDA = VAR QPWOE.",
        140: "VAR ZORBL = VAR XKCDA.",
        185: "VAR MNBVC = VAR ZORBL.",
    }
    for i, statement in chain.items():
        windows[i] = windows[i] + " " + statement
    sentences = [[w] for w in windows]
    query = "Find all variables that are assigned the value 58271."

    def no_meaning(texts: list[str]) -> np.ndarray:  # embeddings that find nothing: only the chase can
        return np.ones((len(texts), 8), dtype=np.float32) / np.sqrt(8)

    choice = coarse.choose_windows(query, windows, sentences, [0] * len(windows), {0: 20}, no_meaning)
    assert choice.scored.dtype == bool and choice.scored.shape == (len(windows),)
    assert all(choice.scored[i] for i in chain), "every link of the chain is scored"
    assert choice.forced == 1 and choice.chased >= 3
    assert np.count_nonzero(choice.scored) <= 20 + 1


def test_a_group_below_its_keep_count_is_scored_whole():
    windows = NOISE[:30]
    choice = coarse.choose_windows("gardens", windows, [[w] for w in windows], [0] * 30, {0: 30}, bag_of_words_embed)
    assert choice.scored.all()


def test_groups_are_filtered_separately():
    windows = NOISE[:100] + NOISE[100:200]
    groups = [0] * 100 + [1] * 100
    choice = coarse.choose_windows(
        "rivers", windows, [[w] for w in windows], groups, {0: 16, 1: 100}, bag_of_words_embed
    )
    assert 16 <= np.count_nonzero(choice.scored[:100]) <= 17  # keep, plus at most the one exact match
    assert choice.scored[100:].all()


# ------------------------------------------------------------------------------------------- in the engine


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch):
    """The fake critic reads 64-token windows: scale the token thresholds down by the same factor as the windows."""
    monkeypatch.setattr(coarse, "COARSE_AUTO_MIN_TOKENS", 2048)
    monkeypatch.setattr(coarse, "COARSE_MIN_TOKENS", 512)


@pytest.fixture
def engine(minilm_tokenizer):
    from cprs_integrations import CPRSEngine

    return CPRSEngine(
        KeywordCritic(minilm_tokenizer, window_tokens=64, batch_size=8), coarse_embedder=bag_of_words_embed
    )


def long_text(needle_at: int = 150) -> str:
    paragraphs = list(NOISE)
    paragraphs[needle_at] = "The secret launch code of the orbital station is 7734-alpha."
    return "\n\n".join(paragraphs)


def test_auto_reads_fewer_windows_and_keeps_the_needle(engine):
    text = long_text()
    query = "What is the secret launch code of the orbital station?"
    [auto] = engine.compress(query, [text], target_ratio=0.05)
    scored_windows = engine.stats()["windows"]
    [off] = engine.compress(query, [text], target_ratio=0.05, coarse_filter="off")
    assert "7734-alpha" in auto.text and "7734-alpha" in off.text
    assert auto.timings["windows"] == off.timings["windows"]
    assert auto.timings["critic_tokens"] >= coarse.COARSE_AUTO_MIN_TOKENS
    assert auto.timings["windows_scored"] < auto.timings["windows"] == off.timings["windows_scored"]
    assert scored_windows == auto.timings["windows_scored"], "the critic saw only the windows the filter kept"
    assert auto.compressed_tokens <= 0.05 * auto.original_tokens


def test_unread_tokens_are_nan_and_never_kept(engine):
    text = long_text()
    query = "What is the secret launch code of the orbital station?"
    [scores] = engine.score(query, [text], target_ratio=0.05)
    unread = np.isnan(scores.probs).all(axis=1)
    assert unread.any() and not np.isnan(scores.probs[~unread]).any()
    # selecting at a larger budget than the one scored for would need unread units to fill it: they stay out
    for result in engine.select([scores], target_ratio=0.6, lexical_weight=1.0) + engine.select(
        [scores], target_ratio=0.6, lexical_weight=0.0, granularity="token"
    ):
        units = word_spans(text) if result.granularity == "token" else sentence_spans(text)
        for start, end in units.tolist():
            if any(span.start <= start and end <= span.end for span in result.spans):
                inside = (scores.offsets[:, 0] >= start) & (scores.offsets[:, 1] <= end)
                assert not unread[inside].all(), f"kept unit {text[start:end]!r} was never read by the critic"
    [off_scores] = engine.score(query, [text], coarse_filter="off")
    assert not np.isnan(off_scores.probs).any()


def test_compress_equals_select_of_score_with_the_filter(engine):
    text = long_text(40)
    query = "What is the secret launch code of the orbital station?"
    options = CompressionOptions(target_ratio=0.05)
    [direct] = engine.compress(query, [text], options)
    [via_scores] = engine.select(engine.score(query, [text], options), options)
    assert direct.spans == via_scores.spans and direct.text == via_scores.text


def test_fixed_budget_and_several_texts_share_one_filter(engine):
    texts = [long_text(10), "\n\n".join(NOISE[:50]), ""]
    query = "What is the secret launch code of the orbital station?"
    results = engine.compress(query, texts, target_tokens=300)
    assert [r.source for r in results] == texts
    assert "7734-alpha" in results[0].text and results[2].empty_reason == "empty_text"
    assert results[0].timings["windows_scored"] < results[0].timings["windows"]
    assert sum(r.compressed_tokens for r in results) <= 300


def test_off_tags_mode_and_short_inputs_read_every_window(engine):
    query = "What is the secret launch code of the orbital station?"
    text = long_text()
    for kwargs in ({"coarse_filter": "off"}, {"mode": "tags"}):
        [r] = engine.compress(query, [text], **kwargs)
        assert r.timings["windows_scored"] == r.timings["windows"]
    [short] = engine.compress(query, ["\n\n".join(NOISE[:20])], target_ratio=0.05)
    assert short.timings["windows_scored"] == short.timings["windows"]
    assert short.timings["critic_tokens"] < coarse.COARSE_AUTO_MIN_TOKENS


def test_coarse_filter_values_are_checked():
    with pytest.raises(ValueError, match="coarse_filter"):
        CompressionOptions(coarse_filter="on")


def test_the_shipped_static_model_ranks_a_paraphrase_above_an_unrelated_sentence():
    from cprs_integrations.models.static_embedding import default_embedder

    embed = default_embedder()
    vectors = embed(
        ["Which instrument does Mara like best?", "Mara's favourite instrument is the cello.", "Rain fell."]
    )
    assert vectors.shape == (3, embed.dimensions) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[1] @ vectors[0] > vectors[2] @ vectors[0]
    assert embed([]).shape == (0, embed.dimensions)


# ------------------------------------------------------------------------------------ prepared-text cache


def test_a_text_compressed_again_gives_the_same_results_from_the_cache(minilm_tokenizer):
    from cprs_integrations import CPRSEngine

    def engine_with(cache_tokens: int) -> CPRSEngine:
        critic = KeywordCritic(minilm_tokenizer, window_tokens=64, batch_size=8)
        return CPRSEngine(critic, coarse_embedder=bag_of_words_embed, cache_tokens=cache_tokens)

    cached, uncached = engine_with(100_000), engine_with(0)
    texts = [long_text(30), "\n\n".join(NOISE[:40])]
    for query, budget in [
        ("What is the secret launch code of the orbital station?", {"target_ratio": 0.05}),
        ("Which rivers are near town number 3?", {"target_tokens": 400}),
        ("What is the secret launch code of the orbital station?", {"target_ratio": 0.05}),
    ]:
        a, b = cached.compress(query, texts, **budget), uncached.compress(query, texts, **budget)
        assert [r.spans for r in a] == [r.spans for r in b]
        assert [r.original_tokens for r in a] == [r.original_tokens for r in b]


def test_prepared_cache_is_bounded_by_tokens_least_recently_used_first(minilm_tokenizer):
    from cprs_integrations.engine.prepared import PreparedCache, prepare
    from cprs_integrations.engine.windows import tokenize_with_offsets

    texts = ["alpha beta gamma. " * 10, "delta epsilon. " * 10, "zeta eta theta. " * 10]
    prepared = [prepare(t, tok) for t, tok in zip(texts, tokenize_with_offsets(minilm_tokenizer, texts))]
    sizes = [len(p.tokenized) for p in prepared]
    cache = PreparedCache(max_tokens=max(sizes[0] + sizes[1], sizes[0] + sizes[2]))
    cache.put(texts[0], prepared[0])
    cache.put(texts[1], prepared[1])
    assert cache.get(texts[0]) is prepared[0]  # now the most recent
    cache.put(texts[2], prepared[2])  # evicts texts[1], the least recently used
    assert cache.get(texts[1]) is None and cache.get(texts[0]) is prepared[0] and cache.get(texts[2]) is prepared[2]
    tiny = PreparedCache(max_tokens=sizes[0] - 1)
    tiny.put(texts[0], prepared[0])
    assert tiny.get(texts[0]) is None


def test_embedding_cache_embeds_each_sentence_once():
    from cprs_integrations.engine.prepared import EmbeddingCache

    seen: list[str] = []

    def counting(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return bag_of_words_embed(texts)

    cache = EmbeddingCache(counting, max_sentences=10)
    first = cache(["a b", "c d", "a b"])
    second = cache(["c d", "e f"])
    assert seen == ["a b", "c d", "e f"]
    assert np.allclose(first[0], first[2]) and np.allclose(first[1], second[0], atol=1e-3)
    assert np.allclose(second, bag_of_words_embed(["c d", "e f"]), atol=1e-3)


def test_cache_tokens_is_checked(minilm_tokenizer):
    from cprs_integrations import CPRSEngine

    with pytest.raises(ValueError, match="cache_tokens"):
        CPRSEngine(KeywordCritic(minilm_tokenizer), cache_tokens=-1)


# ------------------------------------------------------------------ what the critic did not read is never kept


def partly_read(text: str, read_chars: int) -> TokenScores:
    """Scores of ``text`` with a word-per-token layout in which only tokens before ``read_chars`` were read."""
    offsets = word_spans(text)
    probs = np.tile(np.array([0.3, 0.5, 0.1, 0.1], dtype=np.float32), (len(offsets), 1))
    probs[offsets[:, 0] >= read_chars] = np.nan
    return TokenScores(text=text, offsets=offsets, probs=probs, query="q")


def words_counter(text: str) -> int:
    return len(text.split())


def test_the_finer_fallback_never_reaches_unread_tokens():
    from cprs_integrations.engine.select import select

    text = "Alpha beta gamma delta. Epsilon zeta eta theta. Iota kappa lambda mu."
    scores = partly_read(text, read_chars=text.index("Epsilon"))
    [r] = select([scores], CompressionOptions(granularity="paragraph", target_tokens=9, token_counter=words_counter))
    assert r.text and all(span.end <= text.index("Epsilon") for span in r.spans), r.text


def test_tags_mode_never_tags_unread_tokens():
    from cprs_integrations.engine.select import select

    text = "Alpha beta gamma delta. Epsilon zeta eta theta. Iota kappa lambda mu."
    scores = partly_read(text, read_chars=text.index("Epsilon"))
    [r] = select([scores], CompressionOptions(mode="tags", min_span_tokens=0))
    assert all(span.end <= text.index("Epsilon") for span in r.spans)
    assert all(np.isfinite(span.score) for span in r.spans)


def test_a_text_the_filter_did_not_read_says_so(engine):
    query = "What is the secret launch code of the orbital station?"
    short = "Totally unrelated words about cooking pasta at home."
    results = engine.compress(query, [long_text(), short], target_ratio=0.05)
    assert results[1].text == "" and results[1].empty_reason == "not_read"


def test_per_text_fixed_budgets_with_the_filter(engine):
    query = "What is the secret launch code of the orbital station?"
    texts = [long_text(20), long_text(180)]
    results = engine.compress(query, texts, target_tokens=150, per_text_budget=True)
    for r in results:
        assert "7734-alpha" in r.text and r.compressed_tokens <= 150
        assert r.timings["windows_scored"] < r.timings["windows"]


def test_a_cache_hit_skips_tokenizing_and_cache_tokens_zero_keeps_nothing(minilm_tokenizer, monkeypatch):
    from cprs_integrations import CPRSEngine
    from cprs_integrations.engine import engine as engine_module
    from cprs_integrations.engine.prepared import PreparedCache, prepare
    from cprs_integrations.engine.windows import tokenize_with_offsets

    tokenized: list[str] = []

    def counting(tokenizer, texts):
        tokenized.extend(texts)
        return tokenize_with_offsets(tokenizer, texts)

    monkeypatch.setattr(engine_module, "tokenize_with_offsets", counting)
    engine = CPRSEngine(KeywordCritic(minilm_tokenizer, window_tokens=64), coarse_embedder=bag_of_words_embed)
    text = long_text()
    engine.compress("launch code?", [text])
    engine.compress("orbital station?", [text, "A new text, never seen."])
    assert tokenized == [text, "A new text, never seen."], "the second call reused the prepared text"

    uncached = CPRSEngine(KeywordCritic(minilm_tokenizer, window_tokens=64), cache_tokens=0)
    uncached.compress("launch code?", [text])
    uncached.compress("launch code?", [text])
    assert tokenized[-2:] == [text, text]
    [tok] = tokenize_with_offsets(minilm_tokenizer, ["Some words here."])
    empty = PreparedCache(0)
    empty.put("Some words here.", prepare("Some words here.", tok))
    assert empty.get("Some words here.") is None


def test_cached_embeddings_are_the_same_on_a_miss_and_a_hit():
    from cprs_integrations.engine.prepared import EmbeddingCache

    cache = EmbeddingCache(bag_of_words_embed, max_sentences=10)
    first = cache(["red fox jumps", "blue bird sings"])  # 1/sqrt(3): not exact in float16
    again = cache(["red fox jumps", "blue bird sings"])
    assert np.array_equal(first, again)


def test_cached_offsets_cannot_be_changed_by_a_caller(engine):
    [scores] = engine.score("launch code?", [long_text()], coarse_filter="off")
    with pytest.raises(ValueError):
        scores.offsets[0, 0] = 99


def test_window_sentences_include_a_sentence_whose_start_has_no_token(engine):
    text = "\ufeffFirst sentence here. Second one follows. " * 3
    plan = engine._plan("q?", [text], CompressionOptions(coarse_filter="off"))
    _, per_window = plan.window_texts()
    assert per_window[0][0].startswith("\ufeffFirst") or per_window[0][0].startswith("First")
    assert sum(len(s) for s in per_window) == len(sentence_spans(text))


def test_the_best_window_by_meaning_alone_is_read_when_it_shares_no_word_with_the_query():
    windows = [w + " The rivers near town carry weather." for w in NOISE]  # BM25 favours every window but 123
    windows[123] = "The lighthouse keeper's daughter collects antique barometers."
    query = "What old weather instruments does the girl from the coastal beacon gather? rivers town"

    def meaning(texts: list[str]) -> np.ndarray:  # the fact (and the query) point one way, all else another
        hits = [("barometers" in t or "instruments" in t) for t in texts]
        return np.asarray([[1.0, 0.0] if h else [0.0, 1.0] for h in hits], dtype=np.float32)

    choice = coarse.choose_windows(query, windows, [[w] for w in windows], [0] * len(windows), {0: 16}, meaning)
    assert choice.scored[123]
