"""Long texts are segmented block by block, with the same units as the whole text (memory follows a block)."""

from __future__ import annotations

import numpy as np
import pytest

from cprs_integrations.engine import segment

PROSE = (
    "Mira Olsen founded the Tallow Bay rowing club in 1987. It trains approx. 40 rowers on the north lake.\n"
    "The boats, all twelve of them, were built locally; two by Olsen herself.\n\n"
)
MARKDOWN = (
    "# Club history\n\nThe club was founded in 1987 (see [the archive. Part 2](https://example.org/a.b)).\n\n"
    "- first item with `code. inside`\n- second item\n\n"
    "```python\nx = 1\n\ny = 2\n```\n\n"
    "| year | boats |\n|---|---|\n| 1987 | 2 |\n\n## Results\r\n\r\nThey won in Jan. 5 races.\n\n"
)
LINES = "10:01 start engine\n10:02 check oars\n\n"
INDENTED = (
    "* * *\n\n    from: Mira\n    \n    \n    to: the club\n\n    Dear all, we race on Sunday.\n\nEnd of letter.\n\n"
)


NESTED_FENCES = "Intro line.\n\n```\nstill code.\n\n~~~\n\nAnother line.\n```\n\nMore prose after. Second sentence.\n\n"
HTML_COMMENT = "Before it.\n\n<!-- a note\n\nstill the note. Still.\n-->\n\nAfter it. Second one.\n\n"
PRE = "<pre>\nline one.\n\nLine two.\n</pre>\n\nProse again. More.\n\n"


@pytest.mark.parametrize(
    "body",
    [PROSE, MARKDOWN, PROSE + MARKDOWN + LINES, LINES, PROSE + INDENTED + MARKDOWN, NESTED_FENCES, HTML_COMMENT, PRE],
)
def test_blockwise_units_equal_whole_text_units(monkeypatch, body):
    text = body * max(40, 5000 // len(body))
    whole = {
        "sentences": segment.sentence_spans(text),
        "paragraphs": segment.paragraph_spans(text),
        "words": segment.word_spans(text),
        "headings": segment.heading_spans(text),
    }
    monkeypatch.setattr(segment, "BLOCK_CHARS", 700)
    assert len(segment._text_blocks(text)) > 5
    blocked = {
        "sentences": segment.sentence_spans(text),
        "paragraphs": segment.paragraph_spans(text),
        "words": segment.word_spans(text),
        "headings": segment.heading_spans(text),
    }
    for name in whole:
        np.testing.assert_array_equal(blocked[name], whole[name], err_msg=name)
    # Ranges inside one block: the same words and clauses as with the whole text.
    s, e = (int(x) for x in whole["sentences"][len(whole["sentences"]) // 2])
    np.testing.assert_array_equal(segment.clause_spans(text, s, e), _unblocked(segment.clause_spans, text, s, e))
    np.testing.assert_array_equal(segment.word_spans(text, s, e), _unblocked(segment.word_spans, text, s, e))


def _unblocked(function, text, start, end):
    old = segment.BLOCK_CHARS
    segment.BLOCK_CHARS = 10**9
    try:
        return function(text, start, end)
    finally:
        segment.BLOCK_CHARS = old


def test_blocks_never_cut_inside_a_fence(monkeypatch):
    text = "Intro.\n\n```\n" + "code line\n\n" * 200 + "```\n\nAfter the fence.\n\n" * 3
    monkeypatch.setattr(segment, "BLOCK_CHARS", 100)
    blocks = segment._text_blocks(text)
    fence_end = text.index("```\n\nAfter")
    assert all(not (text.index("```") < start <= fence_end) for start, _ in blocks[1:])
