"""The user's JSON-lines records: each bad record named by file, line and field; both forms; a stable split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cprs_integrations.training.evaluate import covered_share, span_kept
from cprs_integrations.training.user_data import (
    SENTENCE_JOINER,
    is_held_out,
    read_records,
    split_records,
    to_example,
)

SENTENCES = ["The kettle is made of steel.", "Its warranty lasts two years.", "Call support on weekdays."]
CONTEXT = SENTENCE_JOINER.join(SENTENCES)
WARRANTY = (CONTEXT.index("Its"), CONTEXT.index("Call") - 1)
GOOD = {"query": "How long is the warranty?", "context": CONTEXT, "keep": [list(WARRANTY)]}


def write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines), encoding="utf-8"
    )
    return path


def error_of(tmp_path: Path, *lines: object) -> str:
    with pytest.raises(ValueError) as caught:
        read_records(write(tmp_path, *lines))
    return str(caught.value)


def test_the_two_forms_give_the_same_text_and_spans(tmp_path: Path):
    sentence_form = {"query": GOOD["query"], "sentences": SENTENCES, "keep_sentences": [1]}
    a, b = read_records(write(tmp_path, GOOD, sentence_form))
    assert a.text == b.text == CONTEXT
    assert a.keep == b.keep == (WARRANTY,)
    assert to_example(a).keep == to_example(b).keep
    assert (a.line, b.line, a.granularity) == (1, 2, "sentence")


def test_overlapping_spans_are_merged_and_an_empty_keep_is_a_negative_example(tmp_path: Path):
    overlapping = {**GOOD, "keep": [[10, 20], [0, 12], [30, 35]]}
    negative = {**GOOD, "keep": [], "id": 7}
    merged, empty = read_records(write(tmp_path, overlapping, "", negative))
    assert merged.keep == ((0, 20), (30, 35))
    assert empty.keep == () and empty.line == 3 and empty.id == "7"


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ("{not json", "", "invalid JSON"),
        (["a list"], "", "expected a JSON object"),
        ({**GOOD, "kept": []}, "unknown field(s) ['kept']", "allowed"),
        ({**GOOD, "query": "  "}, "query", "non-empty string"),
        ({"query": "q"}, "", "missing context + keep"),
        ({"query": "q", "context": CONTEXT}, "missing keep", ""),
        ({**GOOD, "sentences": SENTENCES}, "", "either context + keep or sentences + keep_sentences"),
        ({**GOOD, "context": ""}, "context", "non-empty string"),
        ({**GOOD, "keep": [[0, 4], [40, 12]]}, "keep[1] = [40, 12]", "start must be < end"),
        ({**GOOD, "keep": [[-1, 4]]}, "keep[0] = [-1, 4]", "start must be >= 0"),
        ({**GOOD, "keep": [[0, 999]]}, "keep[0] = [0, 999]", "past the end of context"),
        ({**GOOD, "keep": [[0, 4, 5]]}, "keep[0]", "pair of integers"),
        ({**GOOD, "keep": [[True, 4]]}, "keep[0]", "pair of integers"),
        ({**GOOD, "keep": [0, 4]}, "keep[0] = 0", "pair of integers"),
        ({**GOOD, "keep": "0-4"}, "keep", "list of [start, end] pairs"),
        ({"query": "q", "sentences": SENTENCES, "keep_sentences": [3]}, "keep_sentences[0] = 3", "out of range"),
        ({"query": "q", "sentences": SENTENCES, "keep_sentences": [-1]}, "keep_sentences[0] = -1", "out of range"),
        ({"query": "q", "sentences": SENTENCES, "keep_sentences": ["1"]}, "keep_sentences[0]", "integer index"),
        ({"query": "q", "sentences": ["a", ""], "keep_sentences": []}, "sentences[1]", "non-empty string"),
        ({"query": "q", "sentences": [], "keep_sentences": []}, "sentences", "non-empty list"),
        ({"query": "q", "sentences": SENTENCES}, "missing keep_sentences", ""),
        ({**GOOD, "granularity": "keyword"}, "granularity", "expected one of"),
        ({**GOOD, "instruction": 3}, "instruction", "non-empty string"),
        ({**GOOD, "id": [1]}, "id", "string or an integer"),
    ],
)
def test_each_bad_record_names_the_file_line_and_field(tmp_path: Path, record, field: str, message: str):
    text = error_of(tmp_path, GOOD, "", record)
    assert text.startswith(f"{tmp_path / 'data.jsonl'} line 3: "), text
    assert field in text and message in text


def test_file_level_errors(tmp_path: Path):
    assert "line 2: id = 'a' already used on line 1" in error_of(tmp_path, {**GOOD, "id": "a"}, {**GOOD, "id": "a"})
    assert "no records" in error_of(tmp_path, "", "  ")
    bad_utf8 = tmp_path / "bad.jsonl"
    bad_utf8.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2: not valid UTF-8"):
        read_records(bad_utf8)
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "missing.jsonl")


def test_the_split_is_stable_and_does_not_depend_on_line_order(tmp_path: Path):
    lines = [{**GOOD, "query": f"question {i}?"} for i in range(200)] + [{**GOOD, "id": i} for i in range(200)]
    records = read_records(write(tmp_path, *lines))
    train, held = split_records(records, 0.1)
    assert 20 <= len(held) <= 60 and len(train) + len(held) == 400
    assert split_records(records, 0.1) == (train, held)  # no seed anywhere
    reversed_records = read_records(write(tmp_path, *reversed(lines)))
    held_keys = {r.split_key for r in held}
    assert {r.split_key for r in reversed_records if is_held_out(r, 0.1)} == held_keys
    assert split_records(records, 0.0)[1] == []
    with pytest.raises(ValueError, match="holdout"):
        split_records(records, 1.0)


def test_the_kept_rule_is_ninety_percent_of_the_characters():
    kept = np.array([[0, 9], [20, 30]])
    assert covered_share((0, 10), kept) == pytest.approx(0.9) and span_kept((0, 10), kept)
    assert not span_kept((5, 25), kept) and span_kept((20, 25), kept)
    assert not span_kept((0, 10), np.zeros((0, 2), dtype=np.int64))
