"""``cprs serve`` for real: uvicorn on 127.0.0.1 at a free port, the tiny encoder critic, RemoteCPRSEngine and raw
httpx as clients.

Two servers per module: the main one (API key, small limits) shares the session's ``tiny_engine`` so remote and
in-process results come from the same critic; the gated one has its own engine whose critic waits on a gate, so
that queue-full (429), time limit (504), disconnects and cross-request batching are deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

import httpx
import uvicorn

from cprs_integrations import CompressionOptions, CPRSEngine, RemoteCPRSEngine
from cprs_integrations.api.client import RemoteRequestError
from cprs_integrations.engine.scheduler import QueueFullError
from cprs_integrations.server import ServerSettings, create_app

API_KEY = "test-key-5c0ffee"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUERY = "How should a startup find its first users?"
GRANULARITIES = ("token", "sentence", "paragraph", "chunk")


# ------------------------------------------------------------------------------------------------------ servers


@contextlib.contextmanager
def live_server(app: Any, servers: list[uvicorn.Server] | None = None) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on 127.0.0.1 at a free port (appended to ``servers`` if given); stop it
    (gracefully) on exit."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    if servers is not None:
        servers.append(server)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class Gate:
    """Holds the critic's forward passes while closed (the scheduler's worker waits inside ``score_windows``)."""

    def __init__(self, engine: CPRSEngine):
        self.opened = threading.Event()
        self.opened.set()
        self.entered = threading.Event()
        critic = engine.critic
        original = critic.score_windows

        def score_windows(layouts: Any, windows: Any) -> Any:
            self.entered.set()
            self.opened.wait(30)
            return original(layouts, windows)

        critic.score_windows = score_windows  # type: ignore[method-assign]

    @contextlib.contextmanager
    def closed(self) -> Iterator[None]:
        self.entered.clear()
        self.opened.clear()
        try:
            yield
        finally:
            self.opened.set()


@pytest.fixture(scope="module")
def settings() -> ServerSettings:
    return ServerSettings(
        api_key=API_KEY, max_texts=16, max_chars=60_000, max_body_bytes=300_000, request_timeout_s=60.0
    )


@pytest.fixture(scope="module")
def url(tiny_engine: CPRSEngine, settings: ServerSettings) -> Iterator[str]:
    with live_server(create_app(tiny_engine, settings=settings)) as base:
        yield base


@pytest.fixture(scope="module")
def remote(url: str) -> Iterator[RemoteCPRSEngine]:
    with RemoteCPRSEngine(url, api_key=API_KEY, timeout=60) as engine:
        yield engine


@pytest.fixture(scope="module")
def gated_engine(tiny_encoder_dir: Path) -> CPRSEngine:
    return CPRSEngine.from_pretrained(
        tiny_encoder_dir, device="cpu", dtype="float32", window_tokens=64, batch_size=4, max_queue_windows=8
    )


@pytest.fixture(scope="module")
def gate(gated_engine: CPRSEngine) -> Gate:
    return Gate(gated_engine)


@pytest.fixture(scope="module")
def gated_url(gated_engine: CPRSEngine, gate: Gate) -> Iterator[str]:
    settings = ServerSettings(metrics_open=True, request_timeout_s=30.0)  # no key: this one tests the queue
    with live_server(create_app(gated_engine, settings=settings)) as base:
        yield base


@pytest.fixture(scope="module")
def texts(long_text: str) -> list[str]:
    """Three texts of different lengths (several 64-token windows each) and an empty one."""
    return [long_text[:2500], long_text[2500:3400], long_text[3400:6000], ""]


def wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def same(a: Any, b: Any) -> bool:
    """Two results say the same (timings aside)."""
    return (a.text, a.spans, a.original_tokens, a.compressed_tokens, a.granularity_used, a.empty_reason, a.score) == (
        b.text,
        b.spans,
        b.original_tokens,
        b.compressed_tokens,
        b.granularity_used,
        b.empty_reason,
        b.score,
    )


# ------------------------------------------------------------------------------------------- remote = in-process


@pytest.mark.parametrize("mode", ["budget", "tags"])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_remote_results_equal_in_process(
    remote: RemoteCPRSEngine, tiny_engine: CPRSEngine, texts: list[str], granularity: str, mode: str
) -> None:
    options = CompressionOptions(
        granularity=granularity, mode=mode, **({"target_ratio": 0.3} if mode == "budget" else {})
    )
    got = remote.compress(QUERY, texts, options)
    expected = tiny_engine.compress(QUERY, texts, options)
    assert len(got) == len(texts)
    for result, want, text in zip(got, expected, texts):
        assert same(result, want)
        assert result.source is text, "source is the caller's own object"
        assert (result.granularity, result.mode, result.separator) == (granularity, mode, " ... ")
        assert result.ratio == want.ratio
        assert "score_s" in result.timings


async def test_async_and_overrides_equal_in_process(
    remote: RemoteCPRSEngine, tiny_engine: CPRSEngine, texts: list[str]
) -> None:
    got = await remote.acompress(QUERY, texts, per_text_budget=True, target_tokens=40, token_counter="cl100k_base")
    expected = tiny_engine.compress(QUERY, texts, per_text_budget=True, target_tokens=40, token_counter="cl100k_base")
    assert all(same(a, b) for a, b in zip(got, expected))
    many = await asyncio.gather(*(remote.acompress(QUERY, [t], target_ratio=0.2) for t in texts[:3]))
    assert [r.source for [r] in many] == texts[:3]


def test_score_and_local_select_equal_in_process(
    remote: RemoteCPRSEngine, tiny_engine: CPRSEngine, texts: list[str]
) -> None:
    import numpy as np

    scored = remote.score(QUERY, texts, granularity="paragraph")
    local = tiny_engine.score(QUERY, texts, granularity="paragraph")
    for a, b, text in zip(scored, local, texts):
        assert a.text is text and a.query == QUERY
        assert a.probs.dtype == np.float32 and np.array_equal(a.probs, b.probs), "float32 values travel exactly"
        assert np.array_equal(a.offsets, b.offsets)
    for ratio in (0.1, 0.5):
        assert all(
            same(x, y)
            for x, y in zip(remote.select(scored, target_ratio=ratio), tiny_engine.select(local, target_ratio=ratio))
        )


def test_a_long_input_reads_the_same_windows_remote_and_in_process(
    remote: RemoteCPRSEngine, tiny_engine: CPRSEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coarse filter reads the budget: /v1/score gets it, so remote select(score) equals remote compress."""
    import numpy as np

    from cprs_integrations.engine import coarse
    from cprs_integrations.training.data import essay_text

    # the server (same process) takes at most 60,000 characters here: the filter is switched on from 4K tokens
    monkeypatch.setattr(coarse, "COARSE_AUTO_MIN_TOKENS", 4096)
    monkeypatch.setattr(coarse, "COARSE_MIN_TOKENS", 1024)
    text = essay_text()[:55_000]
    scored = remote.score(QUERY, [text], target_ratio=0.05)
    [local] = tiny_engine.score(QUERY, [text], target_ratio=0.05)
    assert not scored[0].read.all(), "the coarse filter skipped windows"
    assert np.array_equal(scored[0].read, local.read)
    [direct] = remote.compress(QUERY, [text], target_ratio=0.05)
    assert same(remote.select(scored, target_ratio=0.05)[0], direct)
    [everything] = remote.score(QUERY, [text], target_ratio=0.05, coarse_filter="off")
    assert everything.read.all()


def test_multi_hop_remote_equals_in_process(
    remote: RemoteCPRSEngine, tiny_engine: CPRSEngine, texts: list[str]
) -> None:
    """``hops`` travels in both routes: /v1/score rescores with the evidence as /v1/compress does."""
    import numpy as np

    [got] = remote.compress(QUERY, [texts[0]], target_ratio=0.2, hops=2)
    [want] = tiny_engine.compress(QUERY, [texts[0]], target_ratio=0.2, hops=2)
    assert same(got, want) and got.timings["hops"] == want.timings["hops"] == 2
    [scored] = remote.score(QUERY, [texts[0]], target_ratio=0.2, hops=2)
    [local] = tiny_engine.score(QUERY, [texts[0]], target_ratio=0.2, hops=2)
    assert np.array_equal(scored.probs, local.probs)
    [one] = tiny_engine.score(QUERY, [texts[0]], target_ratio=0.2)
    assert not np.array_equal(one.probs, local.probs), "the second pass changed scores"
    assert same(remote.select([scored], target_ratio=0.2, hops=2)[0], got)


def test_client_checks_before_sending(remote: RemoteCPRSEngine) -> None:
    with pytest.raises(TypeError, match="token_counter"):
        remote.compress(QUERY, ["text"], token_counter=lambda s: len(s.split()))
    with pytest.raises(ValueError, match="query"):
        remote.compress("  ", ["text"])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        remote.compress(QUERY, ["a", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="unknown option"):
        remote.compress(QUERY, ["a"], bogus=1)
    # a callable counter is fine where it runs locally: select
    scored = remote.score(QUERY, ["Users come from doing things that do not scale. Talk to them."])
    [result] = remote.select(scored, target_tokens=5, token_counter=lambda s: len(s.split()))
    assert len(result.text.split()) <= 5


def test_models_route(remote: RemoteCPRSEngine, tiny_engine: CPRSEngine, settings: ServerSettings) -> None:
    [info] = remote.models()["data"]
    assert info["kind"] == "encoder" and info["window_tokens"] == tiny_engine.window_tokens == 64
    assert info["limits"]["max_texts"] == settings.max_texts
    assert info["limits"]["token_counters"] == ["o200k_base", "cl100k_base"]


# ------------------------------------------------------------------------------------------------------ adapters


def test_langchain_adapters_accept_the_remote_engine(
    remote: RemoteCPRSEngine, tiny_engine: CPRSEngine, texts: list[str]
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from cprs_integrations.langchain import CPRSDocumentCompressor, CPRSMessagePruner, CPRSRetriever, prune_messages

    docs = [Document(page_content=t, metadata={"part": i}, id=f"d{i}") for i, t in enumerate(texts[:3])]
    for kwargs in ({"target_ratio": 0.3}, {"granularity": "chunk", "mode": "tags"}):
        here = CPRSDocumentCompressor(engine=tiny_engine, **kwargs).compress_documents(docs, QUERY)
        there = CPRSDocumentCompressor(engine=remote, **kwargs).compress_documents(docs, QUERY)
        assert there == here and there
    retrieved = CPRSRetriever(documents=docs, engine=remote, k=2, target_ratio=0.2).invoke(QUERY)
    assert retrieved == CPRSRetriever(documents=docs, engine=tiny_engine, k=2, target_ratio=0.2).invoke(QUERY)

    history = [SystemMessage("You help.", id="s")]
    for i, text in enumerate(texts[:3]):
        history += [HumanMessage(f"What about part {i}?", id=f"h{i}"), AIMessage(text, id=f"a{i}")]
    history.append(HumanMessage(QUERY, id="last"))
    for keep_alternation in (True, False):  # True: score remotely, select locally
        pruned = prune_messages(history, engine=remote, max_tokens=300, keep_alternation=keep_alternation)
        assert pruned == prune_messages(history, engine=tiny_engine, max_tokens=300, keep_alternation=keep_alternation)
    pruner = CPRSMessagePruner(engine=remote, max_tokens=200)
    assert pruner.invoke(history) == CPRSMessagePruner(engine=tiny_engine, max_tokens=200).invoke(history)


async def test_langchain_async_with_the_remote_engine(
    remote: RemoteCPRSEngine, tiny_engine: CPRSEngine, texts: list[str]
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from cprs_integrations.langchain import CPRSDocumentCompressor

    docs = [Document(page_content=t) for t in texts[:3]]
    there = await CPRSDocumentCompressor(engine=remote, target_tokens=80).acompress_documents(docs, QUERY)
    assert there == await CPRSDocumentCompressor(engine=tiny_engine, target_tokens=80).acompress_documents(docs, QUERY)


async def test_llama_index_adapters_accept_the_remote_engine(
    remote: RemoteCPRSEngine, tiny_engine: CPRSEngine, texts: list[str]
) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core import Document
    from llama_index.core.llms import ChatMessage
    from llama_index.core.schema import NodeWithScore, TextNode

    from cprs_integrations.llama_index import CPRSMemoryBlock, CPRSNodePostprocessor, CPRSRetriever

    nodes = [NodeWithScore(node=TextNode(id_=f"n{i}", text=t), score=1.0 - i / 10) for i, t in enumerate(texts[:3])]
    here = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.3).postprocess_nodes(nodes, query_str=QUERY)
    there = CPRSNodePostprocessor(engine=remote, target_ratio=0.3).postprocess_nodes(nodes, query_str=QUERY)
    assert [n.model_dump() for n in there] == [n.model_dump() for n in here] and there
    athere = await CPRSNodePostprocessor(engine=remote, target_ratio=0.3).apostprocess_nodes(nodes, query_str=QUERY)
    assert [n.model_dump() for n in athere] == [n.model_dump() for n in here]

    documents = [Document(text=t, id_=f"doc{i}") for i, t in enumerate(texts[:3])]
    here = CPRSRetriever(documents, engine=tiny_engine, similarity_top_k=2).retrieve(QUERY)
    there = CPRSRetriever(documents, engine=remote, similarity_top_k=2).retrieve(QUERY)
    assert [n.model_dump() for n in there] == [n.model_dump() for n in here] and there

    conversation = [ChatMessage(role="system", content="You are a careful assistant.")]
    for i, text in enumerate(texts[:3]):
        conversation += [
            ChatMessage(role="user", content=f"What does part {i} say?"),
            ChatMessage(role="assistant", content=text),
        ]
    contents = []
    for engine in (tiny_engine, remote):
        block = CPRSMemoryBlock(engine=engine, max_tokens=150)
        await block.aput(conversation)
        contents.append(await block.aget([ChatMessage(role="user", content=QUERY)]))
    assert contents[0] == contents[1] and contents[0]


# ---------------------------------------------------------------------------------------------------------- auth


def test_auth(url: str) -> None:
    body = {"query": QUERY, "texts": ["Talk to users."]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}, {"Authorization": "Basic x"}):
        answer = httpx.post(f"{url}/v1/compress", json=body, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["error"]["type"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
    for path in ("/v1/models", "/metrics", "/docs", "/openapi.json"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
    for path in ("/healthz", "/readyz"):
        answer = httpx.get(f"{url}{path}")
        assert answer.status_code == 200 and answer.json()["status"] in ("ok", "ready")
    assert httpx.post(f"{url}/v1/compress", json=body, headers=AUTH).status_code == 200
    with pytest.raises(PermissionError, match="API key"):
        RemoteCPRSEngine(url, api_key="wrong").compress(QUERY, ["Talk to users."])
    schema = httpx.get(f"{url}/openapi.json", headers=AUTH).json()
    assert {"/v1/compress", "/v1/score", "/v1/models", "/qwen_long_compress_server", "/healthz"} <= set(schema["paths"])
    options = schema["components"]["schemas"]["CompressionOptionsJSON"]["properties"]
    assert set(options) == set(CompressionOptions.model_fields), "the request schema is generated from the options"
    assert httpx.get(f"{url}/docs", headers=AUTH).status_code == 200


def test_request_id_is_echoed(url: str) -> None:
    answer = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "abc-123"})
    assert answer.headers["x-request-id"] == "abc-123"
    generated = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert generated != "bad id\twith spaces" and len(generated) == 32
    error = httpx.post(f"{url}/v1/compress", json={}, headers={**AUTH, "X-Request-ID": "req-9"}).json()["error"]
    assert error["request_id"] == "req-9"


def test_access_log_and_metrics(url: str, caplog: pytest.LogCaptureFixture) -> None:
    body = {"query": QUERY, "texts": ["Talk to users."]}
    with caplog.at_level(logging.INFO, logger="cprs_integrations.server.access"):
        httpx.post(f"{url}/v1/compress", json=body, headers={**AUTH, "X-Request-ID": "logged-1"})
        wait_until(lambda: any("logged-1" in r.getMessage() for r in caplog.records))
    line = json.loads(next(r.getMessage() for r in caplog.records if "logged-1" in r.getMessage()))
    assert line["status"] == 200 and line["route"] == "/v1/compress" and line["texts"] == 1
    assert line["request_id"] == "logged-1" and line["critic_tokens"] > 0 and line["duration_ms"] > 0
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    for name in (
        'cprs_http_requests_total{method="POST",route="/v1/compress",status="200"}',
        "cprs_http_request_duration_seconds_bucket",
        "cprs_http_requests_in_flight",
        "cprs_queue_depth_windows",
        "cprs_windows_in_flight",
        "cprs_batch_fill_ratio",
        "cprs_tokens_per_second",
        "cprs_engine_batches_total",
        "cprs_engine_queued_windows",
        "cprs_engine_ready 1.0",
    ):
        assert name in text, name


# -------------------------------------------------------------------------------------------------------- limits


def test_each_limit_answers_413_naming_it(url: str, remote: RemoteCPRSEngine) -> None:
    cases = {
        "max_texts": {"query": QUERY, "texts": ["a"] * 17},
        "max_chars": {"query": QUERY, "texts": ["word " * 6_000, "word " * 6_001]},
        "max_body_bytes": {"query": QUERY, "texts": ["w" * 310_000]},
    }
    for limit, body in cases.items():
        answer = httpx.post(f"{url}/v1/compress", json=body, headers=AUTH)
        assert answer.status_code == 413, limit
        error = answer.json()["error"]
        assert error["type"] == "limit_exceeded" and error["limit"] == limit and limit in error["message"]
    # a chunked body (no Content-Length) is cut off as it arrives
    chunks = (b'{"query": "q", "texts": ["' + b"w" * 100_000 + b'"' for _ in range(4))
    answer = httpx.post(f"{url}/v1/compress", content=chunks, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["limit"] == "max_body_bytes"
    with pytest.raises(RemoteRequestError, match="max_texts") as caught:
        remote.compress(QUERY, ["a"] * 17)
    assert caught.value.status == 413 and caught.value.error["limit"] == "max_texts"
    assert httpx.post(f"{url}/v1/compress", json={"query": QUERY, "texts": ["ok"]}, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": 5, "texts": ["a"]}, "query"),
        ({"query": "   ", "texts": ["a"]}, "query"),
        ({"query": "", "texts": ["a"]}, "query"),
        ({"query": QUERY, "texts": "a single string"}, "texts"),
        ({"query": QUERY, "texts": ["a", None]}, "texts[1]"),
        ({"query": QUERY}, "texts"),
        ({"query": QUERY, "texts": ["a"], "options": {"bogus": 1}}, "options.bogus"),
        ({"query": QUERY, "texts": ["a"], "options": {"target_ratio": "0.5"}}, "options.target_ratio"),
        ({"query": QUERY, "texts": ["a"], "options": {"target_ratio": 1.5}}, "options.target_ratio"),
        ({"query": QUERY, "texts": ["a"], "options": {"granularity": "word"}}, "options.granularity"),
        ({"query": QUERY, "texts": ["a"], "options": {"token_counter": {"callable": 1}}}, "options.token_counter"),
        ({"query": QUERY, "texts": ["a"], "options": {"token_counter": "p50k_base"}}, "options.token_counter"),
        ({"query": QUERY, "texts": ["a"], "options": {"mode": "tags", "target_ratio": 0.1}}, "options"),
        ({"query": QUERY, "texts": ["a"], "extra": True}, "extra"),
    ],
)
def test_bad_bodies_answer_422_naming_the_field(url: str, body: dict[str, Any], field: str) -> None:
    answer = httpx.post(f"{url}/v1/compress", json=body, headers=AUTH)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["type"] == "invalid_request" and field in [f["field"] for f in error["fields"]]
    assert "Traceback" not in answer.text and "a single string" not in answer.text, "no input echoed back"
    assert httpx.post(f"{url}/v1/compress", json={"query": QUERY, "texts": ["ok"]}, headers=AUTH).status_code == 200


def test_not_json_unknown_route_and_method(url: str) -> None:
    answer = httpx.post(
        f"{url}/v1/compress", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert answer.status_code == 422 and answer.json()["error"]["fields"][0]["field"] == "body"
    assert httpx.get(f"{url}/nowhere", headers=AUTH).json()["error"]["type"] == "not_found"
    assert httpx.get(f"{url}/v1/compress", headers=AUTH).json()["error"]["type"] == "method_not_allowed"


# ------------------------------------------------------------------------------------------ official compatibility


def official_request(context: str, **parameters: Any) -> dict[str, Any]:
    return {
        "header": {"request_id": "req-42", "attributes": {"user": "u1"}},
        "payload": {
            "input": {
                "messages": [
                    {"role": "system", "content": "Extract the sentences that answer the question."},
                    {"role": "user", "content": QUERY},
                    {"role": "context", "content": context},
                ]
            },
            "parameters": parameters,
        },
    }


def test_official_route_answers_in_the_official_shape(url: str, tiny_engine: CPRSEngine, texts: list[str]) -> None:
    context = texts[0]
    for complete_sentence in (False, True):
        request = official_request(context, min_keyword_len=0, return_offset=True, complete_sentence=complete_sentence)
        answer = httpx.post(f"{url}/qwen_long_compress_server", json=request, headers=AUTH)
        assert answer.status_code == 200
        data = answer.json()
        header = data["header"]
        assert header["request_id"] == "req-42" and header["attributes"] == {"user": "u1"}
        assert (header["status_code"], header["status_name"], header["finished"]) == (200, "Success", True)
        assert data["payload"]["input"] == request["payload"]["input"], "the request is echoed"
        assert data["payload"]["usage"]["input_tokens"] > 0
        pieces = data["payload"]["output"]["text"]
        [expected] = tiny_engine.compress(
            QUERY,
            [context],
            mode="tags",
            granularity="sentence" if complete_sentence else "token",
            min_span_tokens=0,
            instruction="Extract the sentences that answer the question.",
        )
        kept = [[context[s.start : s.end].strip(), s.start, s.end] for s in expected.spans]
        assert pieces == [p for p in kept if p[0] and p[0] not in "（），。！"]
        assert all(text == context[start:end].strip() and text for text, start, end in pieces)
    plain = httpx.post(f"{url}/qwen_long_compress_server", json=official_request(context), headers=AUTH).json()
    assert all(isinstance(p, str) for p in plain["payload"]["output"]["text"])


def test_official_route_errors_keep_its_shape(url: str) -> None:
    bad = official_request("context")
    bad["payload"]["input"]["messages"] = bad["payload"]["input"]["messages"][:2]
    answer = httpx.post(f"{url}/qwen_long_compress_server", json=bad, headers=AUTH)
    assert answer.status_code == 422
    data = answer.json()
    assert data["header"]["status_code"] == 422 and data["header"]["request_id"] == "req-42"
    assert data["payload"]["output"] == {"is_match": False} and "messages" in data["header"]["status_message"]
    too_long = official_request("w " * 40_000)
    answer = httpx.post(f"{url}/qwen_long_compress_server", json=too_long, headers=AUTH)
    assert answer.status_code == 413 and answer.json()["header"]["status_name"] == "LimitExceeded"


# ------------------------------------------------------------------------------------- queue, time, disconnects


def post_in_thread(url: str, body: dict[str, Any], results: list[Any], timeout: float = 30.0) -> threading.Thread:
    def run() -> None:
        try:
            results.append(httpx.post(f"{url}/v1/compress", json=body, timeout=timeout))
        except Exception as error:  # a client that gives up
            results.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_full_queue_answers_429_with_retry_after(
    gated_url: str, gated_engine: CPRSEngine, gate: Gate, long_text: str
) -> None:
    big = {"query": QUERY, "texts": [long_text[:4000]]}  # ~20 windows: admitted alone, fills the queue
    results: list[Any] = []
    with gate.closed():
        thread = post_in_thread(gated_url, big, results)
        assert gate.entered.wait(10)
        wait_until(lambda: gated_engine.stats()["queued_windows"] > 8)
        started = time.perf_counter()
        answer = httpx.post(f"{gated_url}/v1/compress", json={"query": QUERY, "texts": ["Talk to users."]})
        assert time.perf_counter() - started < 2, "refused at once"
        assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["type"] == "queue_full"
        with pytest.raises(QueueFullError):
            RemoteCPRSEngine(gated_url, max_retries=0).compress(QUERY, ["Talk to users."])
        # with retries the client waits Retry-After and gets through once the queue drains
        patient: list[Any] = []
        retrying = threading.Thread(
            target=lambda: patient.append(RemoteCPRSEngine(gated_url, max_retries=3).compress(QUERY, ["Talk."]))
        )
        retrying.start()
        time.sleep(0.3)
    thread.join(30)
    retrying.join(30)
    assert results[0].status_code == 200 and len(results[0].json()["results"]) == 1
    assert patient and patient[0][0].source == "Talk."


def test_request_time_limit_answers_504(gated_url: str, gated_engine: CPRSEngine, gate: Gate) -> None:
    with gate.closed():
        body = {"query": QUERY, "texts": ["Talk to users. " * 60], "timeout_s": 0.3}
        answer = httpx.post(f"{gated_url}/v1/compress", json=body, timeout=10)
        assert answer.status_code == 504
        error = answer.json()["error"]
        assert error["type"] == "timeout" and error["limit"] == "request_timeout_s"
        assert gated_engine.stats()["queued_windows"] == 0, "its queued windows were withdrawn"
        with pytest.raises(TimeoutError):
            RemoteCPRSEngine(gated_url, timeout=0.3).compress(QUERY, ["Talk to users. " * 60])
        scoring = httpx.post(f"{gated_url}/v1/score", json=body, timeout=10)
        assert scoring.status_code == 504 and scoring.json()["error"]["limit"] == "request_timeout_s"
        wait_until(lambda: gated_engine.stats()["queued_windows"] == 0)  # score withdraws its windows too
    wait_until(lambda: gated_engine.stats()["queued_windows"] == 0)


def test_client_disconnecting_does_not_break_others(gated_url: str, gated_engine: CPRSEngine, gate: Gate) -> None:
    others: list[Any] = []
    with gate.closed():
        staying = post_in_thread(gated_url, {"query": QUERY, "texts": ["Talk to users. " * 40]}, others)
        assert gate.entered.wait(10)
        wait_until(lambda: gated_engine.stats()["requests"] > 0 and gated_engine.stats()["queued_windows"] > 0)
        waiting = gated_engine.stats()["queued_windows"]  # the staying request's windows, behind the gate
        with httpx.Client() as leaving, pytest.raises(httpx.ReadTimeout):
            leaving.post(f"{gated_url}/v1/compress", json={"query": QUERY, "texts": ["Users. " * 40]}, timeout=0.5)
        # the gone client's windows are withdrawn; the staying request's stay queued
        wait_until(lambda: gated_engine.stats()["queued_windows"] == waiting)
    staying.join(30)
    assert others[0].status_code == 200 and len(others[0].json()["results"]) == 1
    assert httpx.get(f"{gated_url}/healthz").status_code == 200
    wait_until(lambda: gated_engine.stats()["queued_windows"] == 0)


async def test_concurrent_requests_are_batched_together(gated_url: str, gated_engine: CPRSEngine, gate: Gate) -> None:
    remote = RemoteCPRSEngine(gated_url)
    short = [f"Startups find users by talking to them, number {i}." for i in range(6)]  # one window each
    with gate.closed():
        first = asyncio.ensure_future(remote.acompress(QUERY, ["Do things that do not scale."]))
        await asyncio.to_thread(gate.entered.wait, 10)
        before = gated_engine.stats()
        rest = [asyncio.ensure_future(remote.acompress(QUERY, [text])) for text in short]
        for _ in range(500):
            if gated_engine.stats()["queued_windows"] >= len(short):
                break
            await asyncio.sleep(0.01)
    results = await asyncio.gather(first, *rest)
    after = gated_engine.stats()
    assert [r.source for [r] in results[1:]] == short
    # six one-window requests queued together ride in ceil(6 / batch_size 4) = 2 forward passes, not 6
    assert after["batches"] - before["batches"] <= 1 + math.ceil(len(short) / gated_engine.batch_size)
    metrics = httpx.get(f"{gated_url}/metrics").text  # metrics_open on this server
    assert "cprs_batch_fill_ratio" in metrics
    await remote.aclose()


def test_not_ready_until_loaded(tiny_encoder_dir: Path) -> None:
    loaded = threading.Event()

    def load() -> CPRSEngine:
        loaded.wait(10)
        return CPRSEngine.from_pretrained(tiny_encoder_dir, device="cpu", dtype="float32", window_tokens=64)

    with live_server(create_app(engine_factory=load, settings=ServerSettings())) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").json() == {"status": "loading"}
        answer = httpx.post(f"{base}/v1/compress", json={"query": QUERY, "texts": ["Talk."]})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        loaded.set()
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200)
        [result] = RemoteCPRSEngine(base).compress(QUERY, ["Talk to users."])
        assert result.source == "Talk to users."


def test_graceful_shutdown_finishes_requests_in_flight(gated_engine: CPRSEngine, gate: Gate) -> None:
    results: list[Any] = []
    servers: list[uvicorn.Server] = []
    with gate.closed(), live_server(create_app(gated_engine, settings=ServerSettings()), servers) as base:
        thread = post_in_thread(base, {"query": QUERY, "texts": ["Talk to users. " * 30]}, results)
        assert gate.entered.wait(10)
        servers[0].should_exit = True  # what SIGTERM does
        wait_until(lambda: not servers[0].servers[0].is_serving())
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz", timeout=2)
        assert thread.is_alive(), "the request in flight is still being served"
        gate.opened.set()
        thread.join(30)
    assert results[0].status_code == 200 and len(results[0].json()["results"]) == 1


def test_cprs_serve_command(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    """The real command: key from a file, ready once loaded, SIGTERM stops it; a critic that fails to load exits 1."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CPRS_API_KEY", "CPRS_API_KEY_FILE")}
    command = [sys.executable, "-m", "cprs_integrations.cli", "serve", "--port", str(port), "--device", "cpu"]
    options = ["--dtype", "float32", "--window-tokens", "64", "--api-key-file", str(key_file), "--log-level", "warning"]
    serve = subprocess.Popen(
        [*command, "--model", str(tiny_encoder_dir), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            assert serve.poll() is None, serve.stderr.read().decode()  # type: ignore[union-attr]
            return False

        wait_until(ready, seconds=60)
        assert httpx.get(f"{base}/v1/models").status_code == 401
        [result] = RemoteCPRSEngine(base, api_key=API_KEY).compress(
            QUERY, ["Talk to users. Do things that do not scale."]
        )
        assert result.text
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) in (0, -signal.SIGTERM), "uvicorn re-raises the signal once shut down gracefully"
    finally:
        if serve.poll() is None:
            serve.kill()
    failing = subprocess.run(
        [*command, "--model", str(tmp_path / "no-critic-here")], env=env, capture_output=True, text=True, timeout=60
    )
    assert failing.returncode == 1 and "failed to load" in failing.stderr
