"""Unit boundaries as character offsets: words, clauses, sentences, paragraphs, chunks; Markdown headings.

Every span function returns an ``int64`` array of shape ``(n, 2)`` with ``[start, end)`` character (code point)
offsets into the text, sorted and disjoint, each unit stripped of surrounding whitespace, and every non-whitespace
character of the text (or of the requested range) lies in exactly one unit, so selections built from them are exact
slices of the input. Every offset is a grapheme-cluster boundary (a combining mark, an emoji ZWJ sequence, a flag
or a skin-tone modifier is never split; a whitespace character that carries a combining mark counts as part of the
unit). CRLF, CR and LF line endings give the same units.

Where the boundaries come from:

- Sentences and words: ICU break iterators (``icu4py``, see :mod:`cprs_integrations.engine.icu_breaks`): sentence
  terminators of all scripts, numbers and CLDR abbreviations, dictionary-based words for Chinese, Japanese, Thai,
  Lao, Khmer and Burmese. A short list of abbreviations ICU lacks ("Dr.", "Fig. 2", "vol. 12" ...) is added here.
- Lines: in a block of text without sentence punctuation (a transcript, a log, a list) each line is a unit; in
  prose, a line break followed by a lower-case letter continues the sentence (hard-wrapped text).
- Markdown (only when the text looks like Markdown; see :mod:`cprs_integrations.engine.markdown_units`): headings,
  list items, table rows and code lines are units of their own; links, images and inline code are never split.
- Length: a sentence costing more than ``MAX_SENTENCE_CHARS`` (ASCII counts 1, other characters 3) is cut at clause
  marks (``, ; :`` and ``，、；：،؛``), then at words, then by length.

Finer units inside one unit, for selection's fallbacks: :func:`clause_spans` and :func:`word_spans` accept a
``start``/``end`` range. :func:`heading_spans`, :func:`markdown_headings` and :func:`heading_of` expose the
Markdown heading structure so a selection can keep a heading with what follows it.

Examples:
    >>> sentence_spans("One. Two! three?\\nFour").tolist()
    [[0, 4], [5, 16], [17, 21]]
"""

from __future__ import annotations

import bisect
import contextvars
import functools
import re
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import numpy as np
import regex

from cprs_integrations.engine import icu_breaks
from cprs_integrations.engine.markdown_units import (
    MarkdownLayout,
    empty_layout,
    looks_like_markdown,
    markdown_layout,
)
from cprs_integrations.engine.textview import (
    LOWER,
    NO_SPACE_SCRIPT,
    OPENING,
    WORD,
    TextView,
    empty_spans,
    inside,
    view_of,
)

__all__ = [
    "MAX_SENTENCE_CHARS",
    "Headings",
    "chunk_spans",
    "clause_spans",
    "collapse_whitespace",
    "heading_of",
    "heading_spans",
    "looks_like_markdown",
    "markdown_headings",
    "paragraph_spans",
    "sentence_spans",
    "units_for",
    "word_spans",
]

#: A sentence costing more than this (ASCII characters count 1, others 3: about 300 tokens in any script) is cut
#: at clause marks, then at words, then by length, so that no unit is too big to select.
MAX_SENTENCE_CHARS = 1200

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n\s*")
_LINE_BREAK = re.compile(r"\s*\n\s*")
_WHITESPACE_RUN = re.compile(r"\s+")

_STOPS = "。！？｡।॥؟۔։።፧፨။។៕᠃᠉⸮︒﹒﹖﹗．？！"  # sentence terminators that need no space after them
_CLOSERS = "\"'”’)\\]»›」』）"
# Sentence punctuation: a block of lines without any is a list of lines, not wrapped prose.
_TERMINAL = regex.compile(rf"[.!?…‼‽⁇⁈⁉][{_CLOSERS}]*(?=\s|\Z)|[{_STOPS}]")
# A line break inside wrapped prose: the line before does not end a sentence, the next starts in lower case.
_JOINABLE_NEWLINE = regex.compile(
    rf"(?<=\S[^\S\n]*)(?<![.!?…‼‽{_STOPS}][{_CLOSERS}]*[^\S\n]*)\n(?=[^\S\n]*(?:>[^\S\n]*)*\p{{Ll}})"
)
# Abbreviations that ICU's CLDR list lacks: titles and Latin shorthands never end a sentence; reference words and
# months do not when a number (or Roman numeral) follows; nor does a single capital initial ("C. Robert") unless an
# English word that starts sentences, not names, follows ("vitamin C. The", "VAR B. There": Punkt's orthographic
# heuristic, Kiss & Strunk 2006, with a fixed list instead of learned statistics).
_TITLES = (
    "Mr|Mrs|Ms|Mx|Dr|Prof|Sr|Jr|St|Mt|Ft|Gen|Gov|Sen|Rep|Rev|Hon|Capt|Col|Lt|Sgt|Cpl|Maj|Adm|Cmdr|Insp|Supt|Pres"
    "|Messrs|Mme|Mlle|approx|ca|cf|vs|viz|e\\.g|i\\.e|resp|incl|esp|Fr|Bros"
)
_NUMBERED = (
    "Fig|Figs|Eq|Eqs|Tab|Vol|Vols|No|Nos|Nr|pp|p|ch|chap|sec|art|para|Ref|Refs|ed|eds"
    "|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
_ABBREVIATION = regex.compile(rf"(?<![\w.\-])(?i:{_TITLES})\.\Z")
_INITIAL = regex.compile(r"(?<![\w.\-])(?!I\.)\p{Lu}\.\Z")  # "than I." ends one
_SENTENCE_STARTER = regex.compile(
    r"(?:The|There|Then|This|That|These|Those|It|Its|He|She|They|We|You|I|A|An|In|On|At|As|But|And|So|If|When|While"
    r"|After|Before|Since|Because|However|Also|Thus|His|Her|Their|Our|My|No|Not|What|Who|Which|Where|Why|How|Now"
    r"|Here|Some|Many|Most|All|Each|Every|Both|For|From|To|With|Of)\b(?!\.)"  # "A. Hill" is an initial
)
_NUMBERED_ABBREVIATION = regex.compile(rf"(?<![\w.\-])(?i:{_NUMBERED})\.\Z")
_NUMBER_NEXT = regex.compile(r"\d|[IVXLC]+\b")
_CLAUSE = regex.compile(rf"[,;:][{_CLOSERS}]*(?=\s)|[，、；：﹐﹑﹔﹕､،؛፣፤][{_CLOSERS}]*")


#: Texts longer than this many characters are segmented block by block, cut at blank lines outside code fences:
#: the same units (a sentence, paragraph, list item or fence never spans a blank line outside a fence), with memory
#: that follows a block instead of the text (a 10M-token text is 47M characters).
BLOCK_CHARS = 1_000_000
# A blank line followed by an unindented line: never inside an indented code block or a list item's continuation.
_BLOCK_CUT = re.compile(r"\n[ \t\f\v\r]*\n(?=[^\s])")
# Decisions a block must take as its whole text would: is it Markdown, does it have blank lines.
_T = TypeVar("_T")
_MARKDOWN: contextvars.ContextVar[bool | None] = contextvars.ContextVar("cprs_markdown", default=None)
_BLANK_LINES: contextvars.ContextVar[bool | None] = contextvars.ContextVar("cprs_blank_lines", default=None)


def _text_blocks(text: str) -> tuple[tuple[int, int], ...]:
    """The blocks of ``text`` (see :func:`_blocks_of`), for the current :data:`BLOCK_CHARS`."""
    if len(text) <= BLOCK_CHARS:  # the common case, kept out of the cache so that it holds the long text
        return ((0, len(text)),)
    return _blocks_of(text, BLOCK_CHARS)


@functools.lru_cache(maxsize=1)  # one call segments its text several times (windows, units, headings, fallback)
def _blocks_of(text: str, block_chars: int) -> tuple[tuple[int, int], ...]:
    """``[start, end)`` blocks of about :data:`BLOCK_CHARS`, each ending just after the first line break of a blank
    line that is followed by an unindented line and lies outside every Markdown construct that may hold blank lines
    (fenced code, HTML comments and ``pre`` / ``script`` / ``style`` / ``textarea`` blocks); one block for a short
    text or one without such blank lines."""
    regions = _multiline_regions(text)
    starts = [a for a, _ in regions]
    cuts = [0]
    position = block_chars
    while position < len(text):
        match = _BLOCK_CUT.search(text, position)
        while match is not None:
            i = bisect.bisect_right(starts, match.start()) - 1
            if i < 0 or regions[i][1] <= match.start():
                break
            match = _BLOCK_CUT.search(text, regions[i][1])  # inside a construct: look after it
        if match is None:
            break
        cuts.append(match.start() + 1)
        position = cuts[-1] + block_chars
    return tuple(zip(cuts, [*cuts[1:], len(text)]))


_FENCE = re.compile(r"(?m)^ {0,3}(`{3,}|~{3,})([^\n]*)$")
_HTML_OPEN = re.compile(r"(?im)^ {0,3}(<!--|<(pre|script|style|textarea)\b)")


def _multiline_regions(text: str) -> list[tuple[int, int]]:
    """Sorted, disjoint ``[start, end)`` ranges of fenced code blocks (CommonMark's opening and closing rules: the
    same character, a closer at least as long, backtick info strings without backticks) and of HTML blocks that may
    hold blank lines (comments; ``pre``, ``script``, ``style``, ``textarea``); unclosed ones run to the end."""
    regions: list[tuple[int, int]] = []
    opened: tuple[str, int, int] | None = None  # (character, length, start)
    for match in _FENCE.finditer(text):
        run, info = match.group(1), match.group(2)
        if opened is None:
            if run[0] == "`" and "`" in info:
                continue  # a line of inline code, not a fence
            opened = (run[0], len(run), match.start())
        elif run[0] == opened[0] and len(run) >= opened[1] and not info.strip():
            regions.append((opened[2], match.end()))
            opened = None
    if opened is not None:
        regions.append((opened[2], len(text)))
    lowered: str | None = None
    for match in _HTML_OPEN.finditer(text):
        if match.group(1) == "<!--":
            closer, end = "-->", text.find("-->", match.end())
        else:
            lowered = text.lower() if lowered is None else lowered
            closer = f"</{match.group(2).lower()}>"
            end = lowered.find(closer, match.end())
        regions.append((match.start(), len(text) if end < 0 else end + len(closer)))
    regions.sort()
    merged: list[tuple[int, int]] = []
    for start, end in regions:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _per_block(text: str, segment: Callable[[str], _T]) -> list[tuple[_T, int]] | None:
    """``segment`` of each block with the whole text's decisions, with the block's start; ``None`` for one block."""
    blocks = _text_blocks(text)
    if len(blocks) == 1:
        return None
    tokens = (_MARKDOWN.set(looks_like_markdown(text)), _BLANK_LINES.set(True))
    try:
        return [(segment(text[start:end]), start) for start, end in blocks]
    finally:
        _BLANK_LINES.reset(tokens[1])
        _MARKDOWN.reset(tokens[0])


def _blockwise(text: str, segment: Callable[[str], np.ndarray]) -> np.ndarray | None:
    """``segment`` run block by block (see :func:`_per_block`), offsets shifted; ``None`` for one block."""
    parts = _per_block(text, segment)
    return None if parts is None else np.concatenate([spans + shift for spans, shift in parts]).astype(np.int64)


def _in_block(text: str, start: int, end: int | None) -> tuple[str, int, int, int]:
    """The block of a long text that holds ``[start, end)``: (block text, shift, start, end) in block offsets."""
    end = len(text) if end is None else end
    for block_start, block_end in _text_blocks(text):
        if block_start <= start < block_end and end <= block_end:
            return text[block_start:block_end], block_start, start - block_start, end - block_start
    return text, 0, start, end


def _layout(view: TextView) -> MarkdownLayout:
    return _layout_of(view.text, _MARKDOWN.get())


#: Markdown layouts and sentences are cached for this many (block) texts: the blocks of one 10M-token text, so that
#: the engine's window cuts, units and headings parse each block once.
_CACHED_BLOCKS = 64


@functools.lru_cache(maxsize=_CACHED_BLOCKS)
def _layout_of(text: str, markdown: bool | None) -> MarkdownLayout:
    norm = view_of(text).norm
    is_markdown = looks_like_markdown(norm) if markdown is None else markdown
    return markdown_layout(norm) if is_markdown else empty_layout()


def _as_range(view: TextView, start: int, end: int | None) -> tuple[int, int]:
    end = view.n if end is None else min(int(end), view.n)
    return max(0, int(start)), end


def _merge_where(spans: np.ndarray, join_next: np.ndarray) -> np.ndarray:
    """Merge span ``i`` with span ``i + 1`` wherever ``join_next[i]`` (``(m - 1,)`` bool)."""
    if len(spans) < 2 or not join_next.any():
        return spans
    new_group = np.concatenate([[True], ~join_next])
    last_of_group = np.concatenate([np.flatnonzero(new_group)[1:] - 1, [len(spans) - 1]])
    return np.stack([spans[new_group, 0], spans[last_of_group, 1]], axis=1).astype(np.int64)


def _join_protected(spans: np.ndarray, protected: np.ndarray) -> np.ndarray:
    """Merge neighbouring spans whose boundary lies inside a protected range (a link, image, code span)."""
    if len(spans) < 2 or len(protected) == 0:
        return spans
    next_start, end = spans[1:, 0], spans[:-1, 1]
    idx = np.searchsorted(protected[:, 0], next_start, side="left") - 1
    ok = idx >= 0
    idx = np.maximum(idx, 0)
    return _merge_where(spans, ok & (protected[idx, 1] > end))


# ----- words and clauses -----


def _no_space_cuts(view: TextView, runs: np.ndarray, start: int, end: int) -> np.ndarray:
    """ICU word boundaries inside whitespace-free runs that contain Chinese, Japanese, Thai ... characters.

    Punctuation stays with the word before it, opening brackets and quotes with the word after it.
    """
    no_space = (view.bits_between(start, end) & NO_SPACE_SCRIPT) != 0
    if not no_space.any():
        return np.zeros(0, dtype=np.int64)
    flagged = runs[np.add.reduceat(no_space, runs[:, 0] - start) > 0]
    # One ICU call per region of nearby flagged runs.
    gaps = flagged[1:, 0] - flagged[:-1, 1]
    region_starts = np.concatenate([[0], np.flatnonzero(gaps > 200) + 1])
    region_ends = np.concatenate([region_starts[1:] - 1, [len(flagged) - 1]])
    breaks = []
    for first, last in zip(region_starts.tolist(), region_ends.tolist()):
        a, b = int(flagged[first, 0]), int(flagged[last, 1])
        breaks.append(icu_breaks.word_breaks(view.text[a:b], view.codepoints[a:b]) + a)
    cuts = np.concatenate(breaks)
    cuts = cuts[inside(cuts, flagged)]
    if len(cuts) == 0:
        return cuts
    left, right = view.bits_at(cuts - 1), view.bits_at(cuts)
    keep = (((left | right) & NO_SPACE_SCRIPT) != 0) & ((left & OPENING) == 0) & ((right & (WORD | OPENING)) != 0)
    return cuts[keep]


def _words(view: TextView, start: int, end: int, protected: np.ndarray) -> np.ndarray:
    runs = view.word_runs(start, end)
    if len(runs) and view.any_bits & NO_SPACE_SCRIPT:
        cuts = _no_space_cuts(view, runs, start, end)
        if len(cuts):
            runs = np.stack(
                [np.sort(np.concatenate([runs[:, 0], cuts])), np.sort(np.concatenate([runs[:, 1], cuts]))], axis=1
            )
    return _join_protected(runs, protected)


def word_spans(text: str, start: int = 0, end: int | None = None) -> np.ndarray:
    """Words: whitespace-separated, and ICU's dictionary words in scripts written without spaces.

    Punctuation stays attached to its word ("Hello," is one word). In Markdown, a link, image or code span is one
    word. Used for keyword ("token") granularity, and inside one unit as selection's finest fallback.

    Args:
        text: The text.
        start: Only words inside ``text[start:end]`` (offsets still refer to ``text``).
        end: Range end (default: end of text).

    Returns:
        ``(n, 2)`` int64 ``[start, end)`` offsets.

    Examples:
        >>> word_spans(" to be ").tolist()
        [[1, 3], [4, 6]]
        >>> t = "我们今天去北京。"
        >>> [t[s:e] for s, e in word_spans(t)]
        ['我们', '今天', '去', '北京。']
    """
    if len(text) > BLOCK_CHARS:
        if start == 0 and end is None:
            blockwise = _blockwise(text, word_spans)
            if blockwise is not None:
                return blockwise
        else:
            block, shift, start, end = _in_block(text, start, end)
            if shift or len(block) < len(text):
                return word_spans(block, start, end) + shift
    view = view_of(text)
    start, end = _as_range(view, start, end)
    if end <= start:
        return empty_spans()
    return view.snap(_words(view, start, end, _layout(view).protected))


def _clauses(view: TextView, start: int, end: int, protected: np.ndarray) -> np.ndarray:
    cuts = np.fromiter((m.end() for m in _CLAUSE.finditer(view.norm, start, end)), dtype=np.int64)
    if len(protected):
        cuts = cuts[~inside(cuts, protected)]
    return view.strip_pieces(cuts, start, end)


def clause_spans(text: str, start: int = 0, end: int | None = None) -> np.ndarray:
    """Clauses inside ``text[start:end]``: pieces ending at ``, ; :`` (before a space) or at ``，、；：،؛``.

    A finer unit than a sentence, for selection's fallback when the best sentence does not fit the budget.
    Markdown links, images and code spans are never split.

    Args:
        text: The text.
        start: Range start (e.g. a sentence's start).
        end: Range end (default: end of text).

    Returns:
        ``(n, 2)`` int64 offsets into ``text``, covering every non-whitespace character of the range.

    Examples:
        >>> t = "First, we wait; then, at 12:30, we go."
        >>> [t[s:e] for s, e in clause_spans(t)]
        ['First,', 'we wait;', 'then,', 'at 12:30,', 'we go.']
    """
    if len(text) > BLOCK_CHARS:
        block, shift, start, end = _in_block(text, start, end)
        if shift or len(block) < len(text):
            return clause_spans(block, start, end) + shift
    view = view_of(text)
    start, end = _as_range(view, start, end)
    if end <= start:
        return empty_spans()
    return view.snap(_clauses(view, start, end, _layout(view).protected))


# ----- long units -----


def _pack(prefix: np.ndarray, pieces: list[tuple[int, int]], max_cost: int) -> list[tuple[int, int]]:
    """Greedily group consecutive pieces while a group's cost stays within ``max_cost``."""
    out: list[tuple[int, int]] = []
    group_start, group_end = pieces[0]
    for a, b in pieces[1:]:
        if prefix[b] - prefix[group_start] <= max_cost:
            group_end = b
        else:
            out.append((group_start, group_end))
            group_start, group_end = a, b
    out.append((group_start, group_end))
    return out


def _hard_cut(view: TextView, start: int, end: int, max_cost: int) -> list[tuple[int, int]]:
    """Cut ``[start, end)`` by cost alone, at grapheme-cluster boundaries."""
    prefix = view.cost_prefix
    cuts = []
    a = start
    while prefix[end] - prefix[a] > max_cost:
        x = max(int(np.searchsorted(prefix, int(prefix[a]) + max_cost, side="right")) - 1, a + 1)
        lo, hi = view.cluster_around(x)
        if lo != hi:
            x = lo if lo > a else hi
        cuts.append(x)
        a = x
    return [tuple(s) for s in view.strip_pieces(np.asarray(cuts, dtype=np.int64), start, end).tolist()]


def _split_one(view: TextView, start: int, end: int, max_cost: int, protected: np.ndarray, level: int) -> list:
    prefix = view.cost_prefix
    if prefix[end] - prefix[start] <= max_cost:
        return [(start, end)]
    if level >= 2:
        return _hard_cut(view, start, end, max_cost)
    finer = _clauses if level == 0 else _words
    subs = finer(view, start, end, protected).tolist()
    if len(subs) <= 1:
        return _split_one(view, start, end, max_cost, protected, level + 1)
    pieces: list[tuple[int, int]] = []
    for a, b in subs:
        pieces.extend(_split_one(view, a, b, max_cost, protected, level + 1))
    return _pack(prefix, pieces, max_cost)


def _split_long(view: TextView, spans: np.ndarray, max_cost: int, protected: np.ndarray) -> np.ndarray:
    """Cut units costing more than ``max_cost`` at clauses, then words, then by length."""
    if len(spans) == 0:
        return spans
    candidates = np.flatnonzero((spans[:, 1] - spans[:, 0]) * 3 > max_cost)  # cost <= 3 x length
    if len(candidates) == 0:
        return spans
    over = candidates[view.costs(spans[candidates]) > max_cost]
    if len(over) == 0:
        return spans
    parts = []
    previous = 0
    for i in over.tolist():
        parts.append(spans[previous:i])
        s, e = spans[i].tolist()
        parts.append(np.asarray(_split_one(view, s, e, max_cost, protected, 0), dtype=np.int64).reshape(-1, 2))
        previous = i + 1
    parts.append(spans[previous:])
    return np.concatenate(parts).astype(np.int64)


# ----- sentences -----


def _atomic(view: TextView, layout: MarkdownLayout, max_cost: int) -> np.ndarray:
    """``(m,)`` bool: which Markdown segments are single units (a list item too long for one is split instead)."""
    atomic = layout.atomic.copy()
    items = np.flatnonzero(layout.list_item)
    if len(items):
        atomic[items[view.costs(layout.segments[items]) > max_cost]] = False
    return atomic


def _blocks(view: TextView, layout: MarkdownLayout, atomic: np.ndarray) -> np.ndarray:
    """Blocks for the prose-or-lines decision: Markdown prose segments, else blank-line paragraphs."""
    if len(layout.segments):
        return layout.segments[~atomic]
    bounds = [0, *(m.start() for m in _PARAGRAPH_BREAK.finditer(view.norm)), view.n]
    return np.stack([bounds[:-1], bounds[1:]], axis=1).astype(np.int64)


def _joinable_newlines(view: TextView, layout: MarkdownLayout, atomic: np.ndarray) -> np.ndarray:
    """Line breaks inside wrapped prose (see :data:`_JOINABLE_NEWLINE`) in blocks that have sentence punctuation."""
    norm = view.norm
    candidates = np.fromiter((m.start() for m in _JOINABLE_NEWLINE.finditer(norm)), dtype=np.int64)
    if len(candidates) == 0:
        return candidates
    blocks = _blocks(view, layout, atomic)
    if len(blocks) == 0:
        return np.zeros(0, dtype=np.int64)
    terminals = np.fromiter((m.start() for m in _TERMINAL.finditer(norm)), dtype=np.int64)
    has_terminal = np.searchsorted(terminals, blocks[:, 1]) > np.searchsorted(terminals, blocks[:, 0])
    block = np.searchsorted(blocks[:, 0], candidates, side="right") - 1
    ok = (block >= 0) & inside(candidates, blocks)
    ok[ok] &= has_terminal[block[ok]]
    return candidates[ok]


def _false_break(icu_text: str, cut: int, lower_next: bool) -> bool:
    """Whether ICU's sentence break at ``cut`` is after an abbreviation or before a lower-case continuation."""
    j = cut
    while j > 0 and icu_text[j - 1].isspace():
        j -= 1
    newlines = icu_text.count("\n", j, cut)
    if newlines == 0 and lower_next:
        return True
    if newlines > 1 or j == 0 or icu_text[j - 1] != ".":
        return False
    window = max(0, j - 24)
    if _ABBREVIATION.search(icu_text, window, j):
        return True
    if _INITIAL.search(icu_text, window, j):
        return not _SENTENCE_STARTER.match(icu_text, cut)
    return bool(_NUMBERED_ABBREVIATION.search(icu_text, window, j) and _NUMBER_NEXT.match(icu_text, cut))


def _sentence_cuts(view: TextView, layout: MarkdownLayout, max_cost: int) -> np.ndarray:
    norm = view.norm
    atomic = _atomic(view, layout, max_cost)
    joins = _joinable_newlines(view, layout, atomic).tolist()
    if joins:
        pieces, previous = [], 0
        for p in joins:
            pieces.append(norm[previous:p])
            previous = p + 1
        pieces.append(norm[previous:])
        icu_text = " ".join(pieces)
    else:
        icu_text = norm
    cuts = icu_breaks.sentence_breaks(icu_text, view.codepoints)
    lower_next = ((view.bits_at(cuts) & LOWER) != 0).tolist()
    false = [_false_break(icu_text, c, low) for c, low in zip(cuts.tolist(), lower_next)]
    cuts = cuts[~np.asarray(false, dtype=bool)] if false else cuts
    if len(layout.segments):
        cuts = cuts[~inside(cuts, layout.segments[atomic]) & ~inside(cuts, layout.protected)]
        cuts = np.union1d(cuts, layout.segments.reshape(-1))
    return cuts


@functools.lru_cache(maxsize=_CACHED_BLOCKS)
def _sentences(text: str, max_chars: int, markdown: bool | None) -> np.ndarray:
    view = view_of(text)
    layout = _layout(view)
    spans = view.strip_pieces(_sentence_cuts(view, layout, max_chars))
    spans = _split_long(view, spans, max_chars, layout.protected)
    return view.snap(spans)


def sentence_spans(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> np.ndarray:
    """Sentences (ICU), lines of unpunctuated blocks, Markdown block units; long ones cut (see module docstring).

    Args:
        text: Any string.
        max_chars: Sentences costing more than this (ASCII characters 1, others 3) are cut at clause marks, then
            at words, then by length.

    Returns:
        ``(n, 2)`` int64 array of ``[start, end)`` offsets.

    Examples:
        >>> sentence_spans("Dr. Who came. He left.").tolist()
        [[0, 13], [14, 22]]
        >>> t = "राम घर गया। सीता आई।"
        >>> [t[s:e] for s, e in sentence_spans(t)]
        ['राम घर गया।', 'सीता आई।']
    """
    blockwise = _blockwise(text, lambda block: sentence_spans(block, max_chars))
    if blockwise is not None:
        return blockwise
    return _sentences(text, int(max_chars), _MARKDOWN.get()).copy()


# ----- paragraphs, chunks -----


def paragraph_spans(text: str) -> np.ndarray:
    """Paragraphs are separated by blank lines; a text without any blank line uses its lines as paragraphs.

    In Markdown, a heading is a paragraph of its own and a code block, HTML block or table is never split.

    Examples:
        >>> paragraph_spans("A a.\\nA b.\\n\\nB a.").tolist()
        [[0, 9], [11, 15]]
    """
    blockwise = _blockwise(text, paragraph_spans)
    if blockwise is not None:
        return blockwise
    view = view_of(text)
    norm = view.norm
    blank_lines = _BLANK_LINES.get()
    if blank_lines is None:
        blank_lines = _PARAGRAPH_BREAK.search(norm) is not None
    pattern = _PARAGRAPH_BREAK if blank_lines else _LINE_BREAK
    cuts = np.fromiter((m.end() for m in pattern.finditer(norm)), dtype=np.int64)
    layout = _layout(view)
    if len(layout.segments):
        cuts = cuts[~inside(cuts, layout.keep_together)]
        cuts = np.union1d(cuts, layout.headings.reshape(-1))
    return view.snap(view.strip_pieces(cuts))


def chunk_spans(
    text: str, token_offsets: np.ndarray, chunk_tokens: int, sentences: np.ndarray | None = None
) -> np.ndarray:
    """Consecutive sentences grouped into chunks of at most ``chunk_tokens`` tokens, never across paragraphs.

    A single sentence longer than ``chunk_tokens`` forms its own chunk.

    Args:
        text: The text.
        token_offsets: ``(n, 2)`` character offsets of the critic's tokens (used to measure sentences).
        chunk_tokens: Target chunk size in critic tokens (>= 1).
        sentences: Precomputed :func:`sentence_spans`, if any.

    Examples:
        >>> import numpy as np
        >>> text = "A b. C d. E f."
        >>> offsets = np.array([[0, 1], [2, 4], [5, 6], [7, 9], [10, 11], [12, 14]])
        >>> chunk_spans(text, offsets, chunk_tokens=4).tolist()
        [[0, 9], [10, 14]]
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    sents = sentence_spans(text) if sentences is None else sentences
    if len(sents) == 0:
        return empty_spans()
    paragraph_of = np.searchsorted(paragraph_spans(text)[:, 0], sents[:, 0], side="right")
    token_starts = token_offsets[:, 0] if len(token_offsets) else np.zeros(0, dtype=np.int64)
    first = np.searchsorted(token_starts, sents[:, 0], side="left")
    last = np.searchsorted(token_starts, sents[:, 1], side="left")
    sizes = (last - first).tolist()
    chunks: list[tuple[int, int]] = []
    start, size = int(sents[0, 0]), 0
    end = int(sents[0, 1])
    for i, (s, e) in enumerate(sents.tolist()):
        new_paragraph = i > 0 and paragraph_of[i] != paragraph_of[i - 1]
        if i > 0 and (new_paragraph or size + sizes[i] > chunk_tokens):
            chunks.append((start, end))
            start, size = s, 0
        end = e
        size += sizes[i]
    chunks.append((start, end))
    return np.asarray(chunks, dtype=np.int64)


def units_for(granularity: str, text: str, token_offsets: np.ndarray, chunk_tokens: int) -> np.ndarray:
    """The units of one granularity: ``token`` -> words, ``sentence``, ``paragraph``, ``chunk``."""
    if granularity == "token":
        return word_spans(text)
    if granularity == "sentence":
        return sentence_spans(text)
    if granularity == "paragraph":
        return paragraph_spans(text)
    if granularity == "chunk":
        return chunk_spans(text, token_offsets, chunk_tokens)
    raise ValueError(f"unknown granularity {granularity!r}; expected one of 'token', 'sentence', 'paragraph', 'chunk'")


# ----- headings -----


class Headings(NamedTuple):
    """Markdown headings of a text.

    Attributes:
        spans: ``(h, 2)`` int64 ``[start, end)`` of each heading line (a setext heading includes its underline),
            stripped; each is also one unit of :func:`sentence_spans`.
        levels: ``(h,)`` int64 heading levels, 1 (``#``) to 6.
        parents: ``(h,)`` int64 index of the enclosing heading (the nearest earlier one of a smaller level), or -1.
    """

    spans: np.ndarray
    levels: np.ndarray
    parents: np.ndarray


def markdown_headings(text: str) -> Headings:
    """The Markdown headings of ``text`` (none unless the text looks like Markdown).

    Examples:
        >>> h = markdown_headings("# A\\n\\nText.\\n\\n## B\\n\\nMore.")
        >>> h.spans.tolist(), h.levels.tolist(), h.parents.tolist()
        ([[0, 3], [12, 16]], [1, 2], [-1, 0])
    """
    spans, levels = _headings(text)
    parents = np.full(len(spans), -1, dtype=np.int64)
    stack: list[int] = []
    for i, level in enumerate(levels.tolist()):
        while stack and levels[stack[-1]] >= level:
            stack.pop()
        parents[i] = stack[-1] if stack else -1
        stack.append(i)
    return Headings(spans=spans, levels=levels.astype(np.int64), parents=parents)


def _headings(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Heading spans and levels (block by block for a long text)."""
    parts = _per_block(text, _headings)
    if parts is not None:
        spans = np.concatenate([found[0] + shift for found, shift in parts]).astype(np.int64).reshape(-1, 2)
        return spans, np.concatenate([found[1] for found, _ in parts]).astype(np.int64)
    view = view_of(text)
    layout = _layout(view)
    spans = view.strip_spans(layout.headings) if len(layout.headings) else empty_spans()
    levels = layout.heading_levels if len(spans) == len(layout.heading_levels) else np.ones(len(spans), np.int64)
    return spans, levels.astype(np.int64)


def heading_spans(text: str) -> np.ndarray:
    """``(h, 2)`` int64 spans of the Markdown headings of ``text`` (see :func:`markdown_headings`)."""
    return markdown_headings(text).spans


def heading_of(text: str, units: np.ndarray) -> np.ndarray:
    """For each unit, the index (into :func:`heading_spans`) of the heading of the section it lies in.

    The section of a heading runs from it to the next heading of any level; a heading unit maps to itself; a unit
    before the first heading (or in a text without headings) maps to -1. Follow :attr:`Headings.parents` for the
    enclosing headings.

    Args:
        text: The text.
        units: ``(n, 2)`` spans (any granularity).

    Returns:
        ``(n,)`` int64.

    Examples:
        >>> t = "# A\\n\\nOne. Two.\\n\\n## B\\n\\nThree."
        >>> heading_of(t, sentence_spans(t)).tolist()
        [0, 0, 0, 1, 1]
    """
    spans = heading_spans(text)
    units = np.asarray(units, dtype=np.int64).reshape(-1, 2)
    if len(spans) == 0:
        return np.full(len(units), -1, dtype=np.int64)
    return (np.searchsorted(spans[:, 0], units[:, 0], side="right") - 1).astype(np.int64)


def collapse_whitespace(text: str) -> str:
    """Whitespace runs collapsed to one space (for display only)."""
    return _WHITESPACE_RUN.sub(" ", text).strip()
