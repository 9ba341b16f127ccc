"""Markdown structure for segmentation, from markdown-it-py's block tokens and their ``.map`` line ranges.

:func:`looks_like_markdown` decides cheaply (a few regex searches) whether a text is Markdown; only then does
:func:`markdown_layout` parse it (CommonMark + tables). The layout lists the text's leaf blocks as line-aligned
character ranges, in order:

- *atomic* segments are single units at sentence granularity: a heading (ATX or setext), a list item's paragraph
  (with its marker; segment.py splits one too long for a unit into sentences), a table row (the header row with
  its delimiter row), a thematic break, each line of a fenced or indented code block or of an HTML block, and any
  other line the parser gave no block (e.g. link reference definitions);
- *prose* segments (paragraphs, also inside block quotes) are split into sentences.

*Protected* ranges are links, images, inline code and autolinks: no unit boundary falls strictly inside one.
markdown-it-py gives inline tokens no offsets, so they are recorded by wrapping its inline rules (the parser's own
decisions, not a regex) and mapped back through each paragraph's lines.

Offsets are code point offsets into the text; ranges are ``int64`` arrays of shape ``(n, 2)``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable

import numpy as np
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline, autolink, backtick, image, link

from cprs_integrations.engine.textview import empty_spans, merge_overlapping

# Cheap signals that a text is Markdown (any one is enough; list items need two lines).
_STRONG_SIGNAL = re.compile(
    r"^ {0,3}#{1,6}[ \t]+\S"  # ATX heading
    r"|^ {0,3}(?:```|~~~)"  # code fence
    r"|^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*\|[ \t:|-]*$"  # table delimiter row
    r"|!?\[[^\]\n]{1,300}\]\([^)\s]{1,1000}\)"  # link or image
    r"|`[^`\n]{1,300}`",  # inline code
    re.MULTILINE,
)
_LIST_ITEM = re.compile(r"^ {0,3}(?:[-*+]|\d{1,3}[.)])[ \t]+\S", re.MULTILINE)
_PROTECT_HINT = re.compile(r"\]\(|`|<")  # inline links, code spans, autolinks
_REFERENCE_HINT = re.compile(r"[\[`<]")  # ... and reference links once the text defines references
_HITS_KEY = "_cprs_protected"


def looks_like_markdown(text: str) -> bool:
    """Whether ``text`` has Markdown syntax: a heading, a fence, a table, a link/image, inline code or a list.

    Examples:
        >>> looks_like_markdown("# Title\\n\\nText."), looks_like_markdown("Just prose. Nothing else.")
        (True, False)
    """
    if _STRONG_SIGNAL.search(text):
        return True
    matches = _LIST_ITEM.finditer(text)
    return next(matches, None) is not None and next(matches, None) is not None


@dataclasses.dataclass(frozen=True)
class MarkdownLayout:
    """Leaf blocks and protected inline ranges of a Markdown text (see the module docstring).

    Attributes:
        segments: ``(m, 2)`` line-aligned ``[start, end)`` ranges of the leaf blocks, sorted and disjoint (an end is
            the start of the next line, so ranges include their line breaks; units strip them).
        atomic: ``(m,)`` bool, True where the segment is one unit, False where it is prose to split into sentences.
        list_item: ``(m,)`` bool, True for the (atomic) paragraphs of list items.
        protected: ``(k, 2)`` sorted, disjoint ranges of links, images, inline code and autolinks.
        headings: ``(h, 2)`` line-aligned heading ranges (each also an atomic segment).
        heading_levels: ``(h,)`` int64 levels 1-6.
        keep_together: ``(t, 2)`` ranges never split into paragraphs: code blocks, HTML blocks, tables.
    """

    segments: np.ndarray
    atomic: np.ndarray
    list_item: np.ndarray
    protected: np.ndarray
    headings: np.ndarray
    heading_levels: np.ndarray
    keep_together: np.ndarray


def _recording(rule: Callable[[StateInline, bool], bool]) -> Callable[[StateInline, bool], bool]:
    """Wrap an inline rule so that each successful (non-silent) match records its source range in ``env``."""

    def wrapped(state: StateInline, silent: bool) -> bool:
        start = state.pos
        matched = rule(state, silent)
        if matched and not silent:
            hits = state.env.get(_HITS_KEY)
            if hits is not None:
                hits.append((start, state.pos))
        return matched

    return wrapped


@functools.lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark").enable("table")
    md.disable("inline")  # the core rule: inline content is parsed on demand, only where it matters
    for name, rule in (("backticks", backtick), ("link", link), ("image", image), ("autolink", autolink)):
        md.inline.ruler.at(name, _recording(rule))
    return md


def _line_starts(text: str) -> np.ndarray:
    """``(L + 1,)`` int64: start offset of each of the L lines (split at ``\\n``), then ``len(text)``."""
    newlines = np.flatnonzero(np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) == 10)
    return np.concatenate([[0], newlines + 1, [len(text)]]).astype(np.int64)


def _protected_ranges(md: MarkdownIt, content: str, first_line: int, text: str, starts: np.ndarray, env: dict) -> list:
    """Source ranges of the links / images / code spans of one inline block whose lines start at ``first_line``."""
    hint = _REFERENCE_HINT if env.get("references") else _PROTECT_HINT
    if not hint.search(content):
        return []
    hits: list[tuple[int, int]] = []
    env[_HITS_KEY] = hits
    try:
        md.inline.parse(content, md, env, [])
    finally:
        env.pop(_HITS_KEY, None)
    if not hits:
        return []
    # Each content line is its source line less a container prefix / indentation (and trailing spaces): find the
    # shift from content offsets to text offsets line by line, and give up on the block if a line does not match.
    lines = content.split("\n")
    if first_line + len(lines) >= len(starts):
        return []
    content_starts = [0]
    shifts = []
    for j, line in enumerate(lines):
        core = line.strip()
        line_start, line_end = int(starts[first_line + j]), int(starts[first_line + j + 1])
        source = text[line_start:line_end].rstrip()
        core_start = line_start + len(source) - len(core)
        if not source.endswith(core):
            return []
        shifts.append(core_start - (content_starts[-1] + len(line) - len(line.lstrip())))
        content_starts.append(content_starts[-1] + len(line) + 1)
    out = []
    for start, end in hits:
        if end <= start:
            continue
        j0 = int(np.searchsorted(content_starts, start, side="right")) - 1
        j1 = int(np.searchsorted(content_starts, end - 1, side="right")) - 1
        out.append((start + shifts[j0], end + shifts[j1]))
    return out


def markdown_layout(text: str) -> MarkdownLayout:
    """Parse ``text`` (line endings already normalized to ``\\n``) into its :class:`MarkdownLayout`."""
    md = _parser()
    env: dict = {}
    tokens = md.parse(text, env)
    starts = _line_starts(text)
    n_lines = len(starts) - 1
    segments: list[tuple[int, int, bool, bool]] = []  # (first line, end line, atomic, list item)
    protected: list[tuple[int, int]] = []
    headings: list[tuple[int, int, int]] = []  # (first line, end line, level)
    together: list[tuple[int, int]] = []
    stack: list[str] = []
    header_row = False
    for i, token in enumerate(tokens):
        kind = token.type
        if kind.endswith("_close"):
            if stack:
                stack.pop()
            continue
        parent = stack[-1] if stack else ""
        if kind.endswith("_open"):
            stack.append(kind[: -len("_open")])
        if token.map is None:
            continue
        a, b = token.map
        if kind == "paragraph_open":
            in_list = parent == "list_item"
            segments.append((a, b, in_list, in_list))
            inline = tokens[i + 1] if i + 1 < len(tokens) and tokens[i + 1].type == "inline" else None
            if inline is not None and inline.map is not None:
                protected += _protected_ranges(md, inline.content, inline.map[0], text, starts, env)
        elif kind == "heading_open":
            segments.append((a, b, True, False))
            headings.append((a, b, int(token.tag[1:]) if token.tag[1:].isdigit() else 1))
        elif kind == "thead_open":
            header_row = True
        elif kind == "tr_open":
            # The header row takes the delimiter row below it.
            segments.append((a, b + 1 if header_row else b, True, False))
            header_row = False
        elif kind == "table_open":
            together.append((a, b))
        elif kind in ("fence", "code_block", "html_block"):
            segments.extend((line, line + 1, True, False) for line in range(a, b))
            together.append((a, b))
        elif kind == "hr":
            segments.append((a, b, True, False))
    # Lines that no leaf block claims (link reference definitions, a stray table line ...) are units of their own.
    covered = np.zeros(n_lines + 1, dtype=bool)
    for a, b, _, _ in segments:
        covered[a:b] = True
    segments.extend((line, line + 1, True, False) for line in np.flatnonzero(~covered[:n_lines]).tolist())
    segments.sort()
    spans: list[tuple[int, int]] = []
    atomic: list[bool] = []
    list_item: list[bool] = []
    for a, b, is_atomic, is_item in segments:
        start, end = int(starts[min(a, n_lines)]), int(starts[min(b, n_lines)])
        if spans and start < spans[-1][1]:  # defensive: never overlap the previous segment
            start = spans[-1][1]
        if end > start:
            spans.append((start, end))
            atomic.append(is_atomic)
            list_item.append(is_item)
    return MarkdownLayout(
        segments=np.asarray(spans, dtype=np.int64).reshape(-1, 2),
        atomic=np.asarray(atomic, dtype=bool),
        list_item=np.asarray(list_item, dtype=bool),
        protected=merge_overlapping(np.asarray(protected, dtype=np.int64).reshape(-1, 2)),
        headings=np.asarray(
            [(int(starts[min(a, n_lines)]), int(starts[min(b, n_lines)])) for a, b, _ in headings], dtype=np.int64
        ).reshape(-1, 2),
        heading_levels=np.asarray([level for _, _, level in headings], dtype=np.int64),
        keep_together=np.asarray(
            [(int(starts[min(a, n_lines)]), int(starts[min(b, n_lines)])) for a, b in together], dtype=np.int64
        ).reshape(-1, 2),
    )


def empty_layout() -> MarkdownLayout:
    """The layout of a text that is not Markdown (no segments, no protection, no headings)."""
    return MarkdownLayout(
        segments=empty_spans(),
        atomic=np.zeros(0, dtype=bool),
        list_item=np.zeros(0, dtype=bool),
        protected=empty_spans(),
        headings=empty_spans(),
        heading_levels=np.zeros(0, dtype=np.int64),
        keep_together=empty_spans(),
    )
