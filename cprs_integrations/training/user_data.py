"""The user's own training / evaluation data: read and check a JSON-lines file, split it, turn it into examples.

One JSON object per line (blank lines are skipped; line numbers count them), in one of two forms:

* **Character spans**: ``{"query": "...", "context": "...", "keep": [[start, end], ...]}``; ``start`` / ``end`` are
  Python string offsets (Unicode code points, not bytes nor UTF-16 units), ``0 <= start < end <= len(context)``,
  ``end`` exclusive. Overlapping or touching spans are merged.
* **Sentence list**: ``{"query": "...", "sentences": ["...", ...], "keep_sentences": [0, 3]}``; the context is the
  sentences joined with a single space, and each kept sentence becomes the span of its (stripped) text there.

Both forms take an optional ``instruction`` (what the critic is told; default: the template of the granularity),
``granularity`` (``sentence`` by default; ``token``, ``paragraph`` or ``chunk``) and ``id`` (a string or an
integer, unique in the file). An empty ``keep`` / ``keep_sentences`` is valid: a negative example, a context where
nothing answers the query. Any other field is an error (a typo such as ``"kept"`` would otherwise drop labels
silently).

Every problem raises ``ValueError`` naming the file, the line and the field, e.g.
``data.jsonl line 7: keep[1] = [40, 12]: start must be < end``.

Held-out split: a record is held out when ``int(sha256("holdout:" + key)[:8], 16) % 10000 < share * 10000``,
``key`` being its ``id``, or its query and context when it has none. It depends on neither the seed nor the line
order, so adding records never moves the old ones between the splits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cprs_integrations.engine.options import GRANULARITIES
from cprs_integrations.engine.prompts import INSTRUCTIONS
from cprs_integrations.training.data import Example

#: Fields a record may have.
REQUIRED_SPAN_FORM = ("query", "context", "keep")
REQUIRED_SENTENCE_FORM = ("query", "sentences", "keep_sentences")
OPTIONAL_FIELDS = ("instruction", "granularity", "id")
ALLOWED_FIELDS = frozenset(REQUIRED_SPAN_FORM + REQUIRED_SENTENCE_FORM + OPTIONAL_FIELDS)
#: What joins the sentences of the sentence-list form into the context.
SENTENCE_JOINER = " "
#: Share of records held out by default.
DEFAULT_HOLDOUT = 0.1
#: ``task`` of the examples made from user records.
TASK = "user"


@dataclass(frozen=True)
class UserRecord:
    """One checked record.

    Attributes:
        line: 1-based line number in the file.
        id: The record's ``id`` as a string, or ``None``.
        query: The query.
        text: The context (joined sentences for the sentence-list form).
        keep: Character spans to keep (sorted, disjoint, merged where they touch); empty for a negative example.
        instruction: The record's instruction, or ``None`` for the granularity's template.
        granularity: ``token``, ``sentence``, ``paragraph`` or ``chunk``.
    """

    line: int
    id: str | None
    query: str
    text: str
    keep: tuple[tuple[int, int], ...]
    instruction: str | None
    granularity: str

    @property
    def split_key(self) -> str:
        """What the held-out split hashes: the id, else the query and the context."""
        return f"id:{self.id}" if self.id is not None else f"text:{self.query}\x00{self.text}"


class _Where:
    """Formats errors as ``FILE line N: ...``."""

    def __init__(self, path: str, line: int):
        self.prefix = f"{path} line {line}"

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.prefix}: {message}")


def read_records(path: str | Path) -> list[UserRecord]:
    """Read and check every record of a JSON-lines file (see the module docs for the format).

    Args:
        path: The file (UTF-8; a byte-order mark is ignored).

    Returns:
        The records in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a bad record (the message names the file, the line and the field), a duplicate ``id``, or a
            file without records.

    Examples:
        >>> records = read_records("data.jsonl")  # doctest: +SKIP
        >>> records[0].keep  # doctest: +SKIP
        ((10, 52),)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    name = str(path)
    records: list[UserRecord] = []
    seen_ids: dict[str, int] = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = _Where(name, number)
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise where.error(f"not valid UTF-8 (byte {e.start}: {e.reason})") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise where.error(f"invalid JSON ({e.msg} at column {e.colno})") from None
            record = parse_record(value, where, number)
            if record.id is not None:
                if record.id in seen_ids:
                    raise where.error(f"id = {record.id!r} already used on line {seen_ids[record.id]}")
                seen_ids[record.id] = number
            records.append(record)
    if not records:
        raise ValueError(f"{name}: no records (one JSON object per line)")
    return records


def parse_record(value: Any, where: _Where, line: int) -> UserRecord:
    """Check one decoded JSON value and build its :class:`UserRecord` (``where`` prefixes the errors)."""
    if not isinstance(value, dict):
        raise where.error(f"expected a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - ALLOWED_FIELDS)
    if unknown:
        raise where.error(f"unknown field(s) {unknown}; allowed: {sorted(ALLOWED_FIELDS)}")
    query = value.get("query")
    if not isinstance(query, str) or not query.strip():
        raise where.error(f"query = {_short(query)}: must be a non-empty string")
    has_spans = "context" in value or "keep" in value
    has_sentences = "sentences" in value or "keep_sentences" in value
    if has_spans and has_sentences:
        raise where.error("give either context + keep or sentences + keep_sentences, not both")
    if has_sentences:
        text, keep = _sentence_form(value, where)
    elif has_spans:
        text, keep = _span_form(value, where)
    else:
        raise where.error("missing context + keep (character spans) or sentences + keep_sentences (indices)")
    instruction = value.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
        raise where.error(f"instruction = {_short(instruction)}: must be a non-empty string when given")
    granularity = value.get("granularity", "sentence")
    if granularity not in GRANULARITIES:
        raise where.error(f"granularity = {_short(granularity)}: expected one of {list(GRANULARITIES)}")
    record_id = value.get("id")
    if record_id is not None and (isinstance(record_id, bool) or not isinstance(record_id, (str, int))):
        raise where.error(f"id = {_short(record_id)}: must be a string or an integer")
    return UserRecord(
        line=line,
        id=None if record_id is None else str(record_id),
        query=query,
        text=text,
        keep=keep,
        instruction=instruction,
        granularity=granularity,
    )


def _span_form(value: dict[str, Any], where: _Where) -> tuple[str, tuple[tuple[int, int], ...]]:
    for name in ("context", "keep"):
        if name not in value:
            raise where.error(f"missing {name} (the character-span form needs context and keep)")
    context, keep = value["context"], value["keep"]
    if not isinstance(context, str) or not context.strip():
        raise where.error(f"context = {_short(context)}: must be a non-empty string")
    if not isinstance(keep, list):
        raise where.error(f"keep = {_short(keep)}: must be a list of [start, end] pairs (may be empty)")
    spans = []
    for i, span in enumerate(keep):
        field = f"keep[{i}] = {_short(span)}"
        if not (isinstance(span, list) and len(span) == 2 and all(_is_int(x) for x in span)):
            raise where.error(f"{field}: must be a pair of integers [start, end]")
        start, end = span
        if start < 0:
            raise where.error(f"{field}: start must be >= 0")
        if start >= end:
            raise where.error(f"{field}: start must be < end")
        if end > len(context):
            raise where.error(f"{field}: end is past the end of context ({len(context)} characters)")
        if not context[start:end].strip():
            raise where.error(f"{field}: the span is only whitespace")
        spans.append((start, end))
    return context, _merged(spans)


def _sentence_form(value: dict[str, Any], where: _Where) -> tuple[str, tuple[tuple[int, int], ...]]:
    for name in ("sentences", "keep_sentences"):
        if name not in value:
            raise where.error(f"missing {name} (the sentence-list form needs sentences and keep_sentences)")
    sentences, indices = value["sentences"], value["keep_sentences"]
    if not isinstance(sentences, list) or not sentences:
        raise where.error(f"sentences = {_short(sentences)}: must be a non-empty list of strings")
    starts = []
    cursor = 0
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
            raise where.error(f"sentences[{i}] = {_short(sentence)}: must be a non-empty string")
        starts.append(cursor)
        cursor += len(sentence) + len(SENTENCE_JOINER)
    if not isinstance(indices, list):
        raise where.error(f"keep_sentences = {_short(indices)}: must be a list of sentence indices (may be empty)")
    spans = []
    for i, index in enumerate(indices):
        field = f"keep_sentences[{i}] = {_short(index)}"
        if not _is_int(index):
            raise where.error(f"{field}: must be an integer index into sentences")
        if not 0 <= index < len(sentences):
            raise where.error(f"{field}: out of range (there are {len(sentences)} sentences, indices from 0)")
        sentence = sentences[index]
        lead = len(sentence) - len(sentence.lstrip())
        start = starts[index] + lead
        spans.append((start, start + len(sentence.strip())))
    return SENTENCE_JOINER.join(sentences), _merged(spans)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _merged(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_held_out(record: UserRecord, share: float = DEFAULT_HOLDOUT) -> bool:
    """Whether ``record`` belongs to the held-out share (stable: no seed, no line order)."""
    bucket = int(hashlib.sha256(f"holdout:{record.split_key}".encode()).hexdigest()[:8], 16) % 10000
    return bucket < round(share * 10000)


def split_records(
    records: list[UserRecord], holdout: float = DEFAULT_HOLDOUT
) -> tuple[list[UserRecord], list[UserRecord]]:
    """``(train, held_out)`` in file order.

    Raises:
        ValueError: ``holdout`` outside [0, 1), or no record left to train on.
    """
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout={holdout!r}: expected a share in [0, 1)")
    held = [is_held_out(r, holdout) for r in records]
    train = [r for r, h in zip(records, held) if not h]
    if not train:
        raise ValueError(f"holdout={holdout}: every one of the {len(records)} records is held out; lower it")
    return train, [r for r, h in zip(records, held) if h]


def to_example(record: UserRecord) -> Example:
    """The trainer's / evaluator's :class:`~cprs_integrations.training.data.Example` of a record (the granularity's
    canonical instruction when the record has none, as the engine uses at inference)."""
    return Example(
        query=record.query,
        instruction=record.instruction or INSTRUCTIONS["en"][record.granularity][0],
        granularity=record.granularity,
        text=record.text,
        keep=record.keep,
        task=TASK,
        meta={"line": record.line, "id": record.id, "own_instruction": record.instruction is not None},
    )


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (the run folder records it; resuming with a changed file is refused)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
