"""Scale-out on Ray for real: a local Ray cluster started here (2 CPUs), the tiny encoder critic loaded by actors
and replicas, results compared with the in-process engine (``tiny_engine``, same critic and settings).

Ray Data: ``compress_dataset`` equals the engine row by row, whatever the batch size; order, columns and their
values kept; bad rows isolated in the error column; the command ``cprs compress-dataset`` over JSON lines and
Parquet. Ray Serve: ``build_app`` answers as ``cprs serve`` (same bodies as the app under uvicorn, auth, 422
naming the field), ``RemoteCPRSEngine`` unchanged, concurrent requests batched by the replica's engine.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from cprs_integrations import CompressionOptions, CPRSEngine, RemoteCPRSEngine
from cprs_integrations.api.client import RemoteRequestError
from cprs_integrations.cli import main
from cprs_integrations.ray import build_app, compress_dataset
from cprs_integrations.server import ServerSettings, create_app
from tests.integration.test_server import live_server

pytestmark = pytest.mark.ray

API_KEY = "ray-test-key-1d2e3f"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
#: The settings of ``tiny_engine`` (conftest), for actors and replicas.
ENGINE_KWARGS = {"dtype": "float32", "window_tokens": 64}
QUERIES = ("How should a startup find its first users?", "What do investors look for?", "Why do founders fail?")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local cluster for the module; rows keep their order across blocks (Ray Data's option)."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    options = ray.data.DataContext.get_current().execution_options
    kept = options.preserve_order
    options.preserve_order = True
    try:
        yield
    finally:
        options.preserve_order = kept
        ray.shutdown()


@pytest.fixture(scope="module")
def rows(long_text: str) -> list[dict[str, Any]]:
    """Texts of several windows each, three queries, and columns of other types that must come back unchanged."""
    return [
        {
            "id": i,
            "query": QUERIES[i % 3],
            "text": long_text[i * 300 : i * 300 + 1200 + 150 * (i % 4)],
            "tags": [f"t{i}", "x"],
            "weight": i / 7,
        }
        for i in range(14)
    ]


def in_process(engine: CPRSEngine, query: str, text: str, options: CompressionOptions) -> Any:
    """The engine on one text alone: what a row must equal (budgets are per row)."""
    [result] = engine.compress(query, [text], options)
    return result


def assert_row_equals(row: dict[str, Any], expected: Any, column: str = "compressed") -> None:
    assert row[f"{column}_error"] is None
    assert row[column] == expected.text
    assert row[f"{column}_original_tokens"] == expected.original_tokens
    assert row[f"{column}_tokens"] == expected.compressed_tokens
    spans = row[f"{column}_spans"]
    assert [(s["start"], s["end"]) for s in spans] == [(s.start, s.end) for s in expected.spans]
    assert [s["score"] for s in spans] == pytest.approx([s.score for s in expected.spans], abs=1e-5)


def without_scores(row: dict[str, Any]) -> dict[str, Any]:
    spans = row["compressed_spans"]
    return {**row, "compressed_spans": None if spans is None else [(s["start"], s["end"]) for s in spans]}


# ----------------------------------------------------------------------------------------------------- Ray Data


def test_dataset_rows_equal_the_engine_whatever_the_batches_and_actors(
    cluster: None, tiny_encoder_dir: Path, tiny_engine: CPRSEngine, rows: list[dict[str, Any]]
) -> None:
    options = CompressionOptions(target_ratio=0.2)
    runs = []
    for batch_size, actors in ((3, 1), (8, 2)):
        out = compress_dataset(
            ray.data.from_items(rows),
            model=tiny_encoder_dir,
            engine_kwargs=ENGINE_KWARGS,
            options=options,
            batch_size=batch_size,
            concurrency=actors,
        )
        runs.append(out.take_all())
    first, second = runs
    assert [r["id"] for r in first] == [r["id"] for r in rows], "order kept"
    for got, row in zip(first, rows):
        assert {k: got[k] for k in row} == row, "other columns unchanged"
        assert_row_equals(got, in_process(tiny_engine, row["query"], row["text"], options))
    # the same rows, texts, spans and counts; span scores only up to float rounding (batch shapes change padding)
    assert [without_scores(r) for r in first] == [without_scores(r) for r in second], "independent of batches, actors"
    assert [s["score"] for r in first for s in r["compressed_spans"]] == pytest.approx(
        [s["score"] for r in second for s in r["compressed_spans"]], abs=1e-5
    )
    assert set(first[0]) == {
        *rows[0],
        *(f"compressed{s}" for s in ("", "_spans", "_original_tokens", "_tokens", "_error")),
    }


def test_dataset_bad_rows_get_an_error_the_others_a_result(
    cluster: None, tiny_encoder_dir: Path, tiny_engine: CPRSEngine, long_text: str
) -> None:
    query = QUERIES[0]
    texts = [long_text[:900], None, "", "   ", long_text[900:1800], long_text[:6000], long_text[2000:2600]]
    items = [{"id": i, "text": t} for i, t in enumerate(texts)]
    out = compress_dataset(
        ray.data.from_items(items),
        query=query,  # one query for every row: no query column
        output_column="short",
        model=tiny_encoder_dir,
        engine_kwargs={**ENGINE_KWARGS, "max_input_tokens": 600},
        options=CompressionOptions(granularity="paragraph", target_tokens=60),
        batch_size=8,
    ).take_all()
    assert [r["id"] for r in out] == list(range(len(texts)))
    errors = {r["id"]: r["short_error"] for r in out if r["short_error"] is not None}
    assert set(errors) == {1, 5}
    assert errors[1] == "ValueError: text is null"
    assert "max_input_tokens=600" in errors[5], "too long for the engine: that row only"
    for i in errors:
        assert (out[i]["short"], out[i]["short_spans"], out[i]["short_tokens"]) == (None, None, None)
    for i in (2, 3):  # empty texts: an empty result in place, not an error
        assert (out[i]["short"], out[i]["short_spans"], out[i]["short_tokens"]) == ("", [], 0)
    options = CompressionOptions(granularity="paragraph", target_tokens=60)
    for i in (0, 4, 6):
        assert_row_equals(out[i], in_process(tiny_engine, query, texts[i], options), "short")


def test_dataset_blank_query_is_a_row_error_and_tags_mode_works(
    cluster: None, tiny_encoder_dir: Path, tiny_engine: CPRSEngine, rows: list[dict[str, Any]]
) -> None:
    items = [dict(r) for r in rows[:4]]
    items[2]["query"] = "  "
    options = CompressionOptions(mode="tags")
    out = compress_dataset(
        ray.data.from_items(items), model=tiny_encoder_dir, engine_kwargs=ENGINE_KWARGS, options=options
    ).take_all()
    assert out[2]["compressed_error"].startswith("ValueError: query must be a non-empty string")
    for i in (0, 1, 3):
        assert_row_equals(out[i], in_process(tiny_engine, items[i]["query"], items[i]["text"], options))


def test_dataset_arguments_checked_before_running(cluster: None, rows: list[dict[str, Any]]) -> None:
    ds = ray.data.from_items(rows)
    with pytest.raises(ValueError, match="already has column"):
        compress_dataset(ds, output_column="text")
    with pytest.raises(ValueError, match=r"no column\(s\) \['body'\]"):
        compress_dataset(ds, text_column="body")
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        compress_dataset(ds, query=" ")
    with pytest.raises(ValueError, match="concurrency"):
        compress_dataset(ds, concurrency=(2, 1))
    with pytest.raises(ValueError, match="batch_size"):
        compress_dataset(ds, batch_size=0)


def test_command_jsonl_in_jsonl_and_parquet_out(
    cluster: None,
    tmp_path: Path,
    tiny_encoder_dir: Path,
    tiny_engine: CPRSEngine,
    rows: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "docs.jsonl"
    items = [{"doc": r["id"], "question": r["query"], "body": r["text"]} for r in rows[:6]]
    items[3]["body"] = None
    source.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    common = ["--query-column", "question", "--text-column", "body", "--model", str(tiny_encoder_dir)]
    common += ["--dtype", "float32", "--window-tokens", "64", "--tokens", "50", "--batch-size", "4"]
    for kind in ("jsonl", "parquet"):
        target = tmp_path / f"out-{kind}"
        assert main(["compress-dataset", *common, "--output-format", kind, str(source), str(target)]) == 0
        assert "6 rows (1 with an error)" in capsys.readouterr().err
        files = sorted(target.iterdir())
        if kind == "jsonl":
            got = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]
        else:
            got = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
        assert [g["doc"] for g in got] == [item["doc"] for item in items]
        assert got[3]["compressed_error"] == "ValueError: body is null"
        for g, item in zip(got, items):
            if item["body"] is not None:
                expected = in_process(tiny_engine, item["question"], item["body"], CompressionOptions(target_tokens=50))
                assert_row_equals(g, expected)


def test_command_refuses_a_missing_file(cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress-dataset", str(tmp_path / "none.parquet"), str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- Ray Serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve_url(cluster: None, tiny_encoder_dir: Path) -> Iterator[str]:
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = ServerSettings(api_key=API_KEY, max_texts=16, metrics_open=True)
    app = build_app(tiny_encoder_dir, engine_kwargs=ENGINE_KWARGS, settings=settings, batch_wait_timeout_s=0.02)
    serve.run(app, name="cprs", route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def uvicorn_url(tiny_engine: CPRSEngine) -> Iterator[str]:
    """``cprs serve``'s app under uvicorn, same critic and settings: what the Serve app must answer."""
    settings = ServerSettings(api_key=API_KEY, max_texts=16, metrics_open=True)
    with live_server(create_app(tiny_engine, settings=settings)) as url:
        yield url


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A response body without what differs between two servers (timings, request ids, float noise)."""
    body = json.loads(json.dumps(body))
    for result in body.get("results", []):
        result.pop("timings", None)
        result["score"] = round(result["score"], 4)
        for span in result["spans"]:
            span["score"] = round(span["score"], 4)
    body.get("error", {}).pop("request_id", None)
    return body


@pytest.mark.parametrize(
    "body",
    [
        {"query": QUERIES[0], "texts": ["T0", "T1", ""], "options": {"target_ratio": 0.3}},
        {"query": QUERIES[1], "texts": ["T1"], "options": {"granularity": "paragraph", "per_text_budget": True}},
        {"query": QUERIES[2], "texts": ["T0"], "options": {"mode": "tags", "granularity": "token"}},
        {"query": "", "texts": ["T0"]},
        {"query": QUERIES[0], "texts": ["T0"], "options": {"target_ratio": 2}},
        {"query": QUERIES[0], "texts": ["T0"] * 17},
    ],
    ids=["budget", "paragraph-per-text", "tags", "empty-query", "bad-ratio", "too-many-texts"],
)
def test_serve_answers_as_cprs_serve(serve_url: str, uvicorn_url: str, long_text: str, body: dict[str, Any]) -> None:
    body = {
        **body,
        "texts": [long_text[:2000] if t == "T0" else long_text[2000:3500] if t == "T1" else t for t in body["texts"]],
    }
    served = httpx.post(f"{serve_url}/v1/compress", json=body, headers=AUTH, timeout=60)
    reference = httpx.post(f"{uvicorn_url}/v1/compress", json=body, headers=AUTH, timeout=60)
    assert served.status_code == reference.status_code
    assert comparable(served.json()) == comparable(reference.json())
    assert len(served.headers.get_list("x-request-id")) == 1


def test_serve_auth_health_models_and_field_errors(serve_url: str) -> None:
    assert httpx.get(f"{serve_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{serve_url}/readyz").json() == {"status": "ready"}
    denied = httpx.post(f"{serve_url}/v1/compress", json={"query": "q", "texts": ["t"]})
    assert denied.status_code == 401
    assert httpx.get(f"{serve_url}/v1/models").status_code == 401
    [model] = httpx.get(f"{serve_url}/v1/models", headers=AUTH).json()["data"]
    assert (model["window_tokens"], model["limits"]["max_queue_windows"]) == (64, 4096)
    bad = httpx.post(f"{serve_url}/v1/compress", json={"query": "q", "texts": "not a list"}, headers=AUTH)
    assert bad.status_code == 422
    assert [f["field"] for f in bad.json()["error"]["fields"]] == ["texts"]
    request_id = "my-request-42"
    answered = httpx.get(f"{serve_url}/healthz", headers={"X-Request-ID": request_id})
    assert answered.headers.get_list("x-request-id") == [request_id]


async def test_remote_engine_against_serve_equals_in_process(
    serve_url: str, tiny_engine: CPRSEngine, long_text: str
) -> None:
    texts = [long_text[:2500], long_text[2500:4000], ""]
    with RemoteCPRSEngine(serve_url, api_key=API_KEY, timeout=60) as remote:
        for options in (CompressionOptions(target_ratio=0.25), CompressionOptions(granularity="chunk", mode="tags")):
            got = remote.compress(QUERIES[0], texts, options)
            expected = tiny_engine.compress(QUERIES[0], texts, options)
            for a, b, text in zip(got, expected, texts):
                assert a.text == b.text
                assert [(x.start, x.end) for x in a.spans] == [(x.start, x.end) for x in b.spans]
                assert a.source is text
        scored = remote.score(QUERIES[1], texts[:1])
        [local] = tiny_engine.score(QUERIES[1], texts[:1])
        assert scored[0].probs == pytest.approx(local.probs, abs=1e-5)
        with pytest.raises(RemoteRequestError):
            remote.compress(QUERIES[0], ["x"] * 17)
        before = _metric(serve_url, "cprs_engine_batches_total")
        short = long_text[:150]  # one window each
        many = await asyncio.gather(*(remote.acompress(f"{q} ({i})", [short]) for i in range(9) for q in QUERIES))
        batches = _metric(serve_url, "cprs_engine_batches_total") - before
    assert len(many) == 27 and all(r.source is short for [r] in many)
    assert batches < 27, f"{batches} forward passes: the replica's engine batches concurrent requests"


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics:\n{text[:2000]}")
