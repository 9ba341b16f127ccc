from __future__ import annotations

import numpy as np
import pytest

from cprs_integrations.engine import segment
from cprs_integrations.engine.windows import boundary_token_starts, cut_windows


def test_sentences_split_on_punctuation_and_newlines_but_not_before_lowercase():
    text = "It rained. It poured! e.g. the rest? yes\nNew line"
    spans = segment.sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["It rained.", "It poured! e.g. the rest? yes", "New line"]


def test_cjk_sentences():
    text = "今天下雨。明天晴天！好吗？"
    assert [text[s:e] for s, e in segment.sentence_spans(text)] == ["今天下雨。", "明天晴天！", "好吗？"]


def test_paragraphs_use_blank_lines_else_lines():
    assert segment.paragraph_spans("a\nb\n\nc").tolist() == [[0, 3], [5, 6]]
    assert segment.paragraph_spans("a\nb").tolist() == [[0, 1], [2, 3]]
    assert segment.paragraph_spans("   ").tolist() == []


def test_long_sentences_are_split_at_whitespace():
    text = "word " * 1000
    spans = segment.sentence_spans(text, max_chars=100)
    assert all(e - s <= 100 for s, e in spans)
    assert sum(len(text[s:e].split()) for s, e in spans) == 1000


def test_chunks_group_sentences_within_paragraphs():
    text = "A b. C d. E f.\n\nG h."
    offsets = np.array([[0, 1], [2, 4], [5, 6], [7, 9], [10, 11], [12, 14], [16, 17], [18, 20]])
    chunks = segment.chunk_spans(text, offsets, chunk_tokens=4)
    assert [text[s:e] for s, e in chunks] == ["A b. C d.", "E f.", "G h."]
    with pytest.raises(ValueError, match="chunk_tokens"):
        segment.chunk_spans(text, offsets, chunk_tokens=0)


def test_unknown_granularity_names_the_choices():
    with pytest.raises(ValueError, match="'token', 'sentence', 'paragraph', 'chunk'"):
        segment.units_for("word", "text", np.zeros((0, 2), dtype=np.int64), 10)


def test_windows_cover_everything_and_prefer_boundaries():
    windows = cut_windows(100, 30, preferred_starts=np.array([25, 52]), fallback_starts=np.array([10, 20, 40, 75, 80]))
    assert windows[0, 0] == 0 and windows[-1, 1] == 100
    assert all(windows[i, 1] == windows[i + 1, 0] for i in range(len(windows) - 1))
    assert all(0 < e - s <= 30 for s, e in windows)
    assert windows[0].tolist() == [0, 25]  # paragraph start within the last quarter
    assert windows[1].tolist() == [25, 52]


def test_windows_hard_cut_without_boundaries():
    assert cut_windows(10, 4).tolist() == [[0, 4], [4, 8], [8, 10]]
    assert cut_windows(0, 4).tolist() == []
    with pytest.raises(ValueError):
        cut_windows(10, 0)


def test_boundary_token_starts():
    offsets = np.array([[0, 2], [3, 5], [6, 8]])
    assert boundary_token_starts(offsets, np.array([0, 3, 6])).tolist() == [1, 2]
    assert boundary_token_starts(offsets, np.array([7])).tolist() == []  # inside the last token


@pytest.mark.parametrize("which", ["minilm", "qwen"])
def test_tokenizing_in_pieces_gives_the_ids_and_offsets_of_the_whole_text(monkeypatch, which):
    from transformers import AutoTokenizer

    from cprs_integrations.engine import windows
    from cprs_integrations.models.testing import minilm_dir, qwen_tokenizer_dir
    from cprs_integrations.training.data import essay_text

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir() if which == "minilm" else qwen_tokenizer_dir())
    text = essay_text()[:60_000] + "\n\n  indented line\n\nLast line.\r\nEnd"
    [whole] = windows.tokenize_with_offsets(tokenizer, [text])
    monkeypatch.setattr(windows, "TOKENIZE_PIECE_CHARS", 5_000)
    assert len(windows._pieces(text)) > 5
    [pieces] = windows.tokenize_with_offsets(tokenizer, [text, "short"])[:1]
    np.testing.assert_array_equal(pieces.ids, whole.ids)
    np.testing.assert_array_equal(pieces.offsets, whole.offsets)
