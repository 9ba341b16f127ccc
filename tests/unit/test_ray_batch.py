"""CompressBatch in-process (no Ray: the class is plain Python and pyarrow), on the keyword fake critic: rows and
columns kept, per-row budgets whatever the batch split, one engine call per query, bad rows isolated."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("pyarrow")

import pyarrow as pa

from cprs_integrations import CompressionOptions, CPRSEngine
from cprs_integrations.ray.batch import CompressBatch, OutputColumns, row_options

QUERY_A = "Which river flows through the old town?"
QUERY_B = "When was the bridge built?"
TEXT = (
    "The old town sits on a hill. The river Velka flows through the old town from north to south. "
    "A stone bridge was built in 1421 by the guild of masons. Tourists come in summer.\n\n"
    "The market square has a fountain. The bridge was rebuilt in 1890 after a flood."
)


def table(rows: list[dict[str, Any]]) -> Any:
    return pa.Table.from_pylist(rows)


def rows_of(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "query": QUERY_A if i % 2 else QUERY_B, "text": TEXT[i * 7 :], "meta": {"k": i}} for i in range(n)
    ]


def test_rows_columns_and_order_kept_and_results_equal_the_engine_per_row(fake_engine: CPRSEngine) -> None:
    stage = CompressBatch(engine=fake_engine, options=CompressionOptions(target_tokens=25))
    rows = rows_of(6)
    out = stage(table(rows)).to_pylist()
    assert [{k: r[k] for k in rows[0]} for r in out] == rows
    for row, got in zip(rows, out):
        [want] = fake_engine.compress(row["query"], [row["text"]], target_tokens=25)
        assert got["compressed"] == want.text and got["compressed_error"] is None
        assert got["compressed_spans"] == [{"start": s.start, "end": s.end, "score": s.score} for s in want.spans]
        assert (got["compressed_original_tokens"], got["compressed_tokens"]) == (
            want.original_tokens,
            want.compressed_tokens,
        )
        assert got["compressed_tokens"] <= 25


def test_results_do_not_depend_on_the_batch_split(fake_engine: CPRSEngine) -> None:
    stage = CompressBatch(engine=fake_engine, options=CompressionOptions(target_ratio=0.3))
    whole = stage(table(rows_of(8))).to_pylist()
    halves = stage(table(rows_of(8)[:3])).to_pylist() + stage(table(rows_of(8)[3:])).to_pylist()
    assert halves == whole


def test_one_engine_call_per_query(fake_engine: CPRSEngine) -> None:
    stage = CompressBatch(engine=fake_engine)
    before = fake_engine.stats()["requests"]
    stage(table(rows_of(6)))
    assert fake_engine.stats()["requests"] - before == 2


def test_bad_rows_get_an_error_the_others_a_result(fake_engine: CPRSEngine) -> None:
    stage = CompressBatch(engine=fake_engine, query_column="q", text_column="body", output_column="short")
    rows = [
        {"q": QUERY_A, "body": TEXT},
        {"q": QUERY_A, "body": None},
        {"q": None, "body": TEXT},
        {"q": "   ", "body": TEXT},
        {"q": QUERY_B, "body": ""},
    ]
    out = stage(table(rows)).to_pylist()
    assert [r["short_error"] for r in out] == [
        None,
        "ValueError: body is null",
        "ValueError: q is null",
        "ValueError: q must be a non-empty string (it guides what is kept), got '   '",
        None,
    ]
    assert (out[4]["short"], out[4]["short_spans"], out[4]["short_tokens"]) == ("", [], 0)
    assert all(out[i]["short"] is None and out[i]["short_spans"] is None for i in (1, 2, 3))
    assert out[0]["short"]


def test_a_column_of_numbers_gives_errors_not_a_failed_batch(fake_engine: CPRSEngine) -> None:
    stage = CompressBatch(engine=fake_engine, query=QUERY_A, text_column="n")
    out = stage(table([{"n": 1}, {"n": 2}])).to_pylist()
    assert [r["compressed_error"] for r in out] == ["TypeError: n must be a str, got int"] * 2


def test_a_text_the_engine_refuses_fails_only_its_row(fake_engine: CPRSEngine) -> None:
    fake_engine.max_input_tokens = 80
    stage = CompressBatch(engine=fake_engine, query=QUERY_A)
    out = stage(table([{"text": TEXT[:150]}, {"text": TEXT * 3}, {"text": TEXT[150:300]}])).to_pylist()
    assert out[1]["compressed_error"].startswith("ValueError: the texts hold")
    assert out[0]["compressed_error"] is None and out[2]["compressed_error"] is None


def test_a_broken_critic_fails_the_batch(fake_critic: Any) -> None:
    fake_critic.fail_above = 0  # every forward pass raises: not a row's fault
    stage = CompressBatch(engine=CPRSEngine(fake_critic), query=QUERY_A)
    with pytest.raises(RuntimeError):
        stage(table([{"text": TEXT}]))


def test_columns_and_options_checked(fake_engine: CPRSEngine) -> None:
    with pytest.raises(ValueError, match="already has column"):
        CompressBatch(engine=fake_engine, output_column="text")(table(rows_of(1)))
    with pytest.raises(ValueError, match=r"no column\(s\) \['query'\]"):
        CompressBatch(engine=fake_engine)(table([{"text": TEXT}]))
    with pytest.raises(ValueError, match="output_column"):
        OutputColumns.named(" ")
    assert row_options(None).per_text_budget
    assert row_options(CompressionOptions(mode="tags")).mode == "tags"
    with pytest.raises(TypeError, match="CompressionOptions"):
        row_options({"target_ratio": 0.1})  # type: ignore[arg-type]
