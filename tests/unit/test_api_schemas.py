"""The HTTP API's JSON shapes, the server settings and the client's own checks, without a server."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from cprs_integrations import CompressionOptions, CompressionResult, Compressor, KeptSpan, RemoteCPRSEngine
from cprs_integrations.api.client import _retry_after
from cprs_integrations.api.schemas import (
    CompressionOptionsJSON,
    CompressionResultJSON,
    CompressRequest,
    TokenScoresJSON,
    options_to_json,
    token_counter_name,
)
from cprs_integrations.engine.budget import get_encoding
from cprs_integrations.engine.result import TokenScores
from cprs_integrations.server.settings import ServerSettings


def test_options_schema_is_the_options_with_a_named_counter() -> None:
    assert list(CompressionOptionsJSON.model_fields) == list(CompressionOptions.model_fields)
    for name, field in CompressionOptions.model_fields.items():
        assert CompressionOptionsJSON.model_fields[name].default == field.default, name
    given = CompressionOptionsJSON.model_validate({"granularity": "chunk", "target_tokens": 50})
    assert given.to_options() == CompressionOptions(granularity="chunk", target_tokens=50)
    assert type(given.to_options()) is CompressionOptions
    assert CompressionOptionsJSON().to_options() == CompressionOptions()


def test_request_errors_name_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        CompressRequest.model_validate({"query": "q", "texts": ["a", 3], "options": {"lexical_weight": -1, "x": 1}})
    locations = {tuple(e["loc"]) for e in caught.value.errors()}
    assert {("texts", 1), ("options", "lexical_weight"), ("options", "x")} <= locations


def test_result_schema_is_generated_from_the_dataclass() -> None:
    names = [f.name for f in dataclasses.fields(CompressionResult) if f.name != "source"]
    assert list(CompressionResultJSON.model_fields) == names
    assert CompressionResultJSON.model_fields["spans"].description.startswith("The kept slices")
    source = "alpha beta gamma"
    result = CompressionResult(
        text="beta",
        spans=(KeptSpan(6, 10, 0.123456789),),
        source=source,
        original_tokens=3,
        compressed_tokens=1,
        granularity="token",
        mode="budget",
        separator=" ... ",
        timings={"total_s": 0.5},
        score=0.9,
        empty_reason=None,
    )
    wire = CompressionResultJSON.from_result(result).model_dump_json()
    back = CompressionResultJSON.model_validate_json(wire).to_result(source)
    assert back == result and back.source is source
    assert '"ratio":3.0' in wire
    nothing = dataclasses.replace(result, text="", spans=(), compressed_tokens=0, empty_reason="outranked")
    assert math.isinf(nothing.ratio) and '"ratio":null' in CompressionResultJSON.from_result(nothing).model_dump_json()
    newer = CompressionResultJSON.model_validate_json(wire[:-1] + ',"added_later":1}')  # a newer server's field
    assert newer.to_result(source) == result


def test_token_scores_travel_exactly() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((7, 4), dtype=np.float32)
    offsets = np.arange(14, dtype=np.int64).reshape(7, 2)
    wire = TokenScoresJSON.from_scores(TokenScores("t" * 14, offsets, probs, "q"), "q").model_dump_json()
    back = TokenScoresJSON.model_validate_json(wire).to_scores("t" * 14, "q")
    assert np.array_equal(back.probs, probs) and back.probs.dtype == np.float32
    assert np.array_equal(back.offsets, offsets) and back.offsets.dtype == np.int64


def test_the_query_the_scores_answer_travels_when_it_is_not_the_requests() -> None:
    """After further passes (hops) the scores answer the query with its evidence: BM25 fusion must read it."""
    probs = np.random.default_rng(2).random((3, 4), dtype=np.float32)
    offsets = np.arange(6, dtype=np.int64).reshape(3, 2)
    same = TokenScoresJSON.from_scores(TokenScores("t" * 6, offsets, probs, "q"), "q")
    assert same.query is None and same.to_scores("t" * 6, "q").query == "q"
    hop = TokenScoresJSON.from_scores(TokenScores("t" * 6, offsets, probs, "q Known facts: f."), "q").model_dump_json()
    assert TokenScoresJSON.model_validate_json(hop).to_scores("t" * 6, "q").query == "q Known facts: f."


def test_tokens_the_critic_did_not_read_travel_as_null() -> None:
    probs = np.random.default_rng(1).random((5, 4), dtype=np.float32)
    probs[1:3] = np.nan  # a window the coarse filter skipped
    offsets = np.arange(10, dtype=np.int64).reshape(5, 2)
    wire = TokenScoresJSON.from_scores(TokenScores("t" * 10, offsets, probs, "q"), "q").model_dump_json()
    assert "NaN" not in wire and json.loads(wire)["probs"].count(None) == 2
    back = TokenScoresJSON.model_validate_json(wire).to_scores("t" * 10, "q")
    assert np.array_equal(back.probs, probs, equal_nan=True)


def test_token_counter_travels_as_a_name() -> None:
    assert token_counter_name("cl100k_base") == "cl100k_base"
    assert token_counter_name(get_encoding("o200k_base")) == "o200k_base"
    with pytest.raises(TypeError, match="token_counter"):
        token_counter_name(len)
    options = CompressionOptions(target_tokens=10, token_counter=get_encoding("cl100k_base"))
    assert options_to_json(options) == {"target_tokens": 10, "token_counter": "cl100k_base"}
    assert options_to_json(CompressionOptions(granularity="chunk"), only=("granularity",)) == {"granularity": "chunk"}


def test_remote_engine_is_a_compressor_and_checks_its_arguments() -> None:
    engine = RemoteCPRSEngine("http://127.0.0.1:1", api_key="k")
    assert isinstance(engine, Compressor)
    assert "with API key" in repr(engine) and "'k'" not in repr(engine)
    for bad in ({"timeout": 0}, {"max_retries": -1}, {"max_retries": True}, {"backoff_s": -1}):
        with pytest.raises(ValueError):
            RemoteCPRSEngine("http://127.0.0.1:1", **bad)
    with pytest.raises(ValueError, match="URL"):
        RemoteCPRSEngine("127.0.0.1:8000")
    with pytest.raises(ConnectionError, match="cannot reach"):
        engine.compress("q", ["text"])  # nothing listens on port 1
    engine.close()


def test_retry_after_is_read_in_seconds_or_as_a_date() -> None:
    assert _retry_after("2") == 2.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_settings_read_the_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CPRS_API_KEY", raising=False)
    monkeypatch.delenv("CPRS_API_KEY_FILE", raising=False)
    assert ServerSettings.from_env().api_key is None
    monkeypatch.setenv("CPRS_API_KEY", " from-env \n")
    assert ServerSettings.from_env().api_key.get_secret_value() == "from-env"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert ServerSettings.from_env(key_file).api_key.get_secret_value() == "from-file"
    monkeypatch.setenv("CPRS_API_KEY_FILE", str(key_file))
    with pytest.raises(ValueError, match="not both"):
        ServerSettings.from_env()
    monkeypatch.delenv("CPRS_API_KEY")
    assert ServerSettings.from_env(max_texts=3).max_texts == 3
    key_file.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        ServerSettings.from_env()
    with pytest.raises(FileNotFoundError):
        ServerSettings.from_env(tmp_path / "missing")
    with pytest.raises(ValueError, match="max_texts"):
        ServerSettings(max_texts=0)
    assert "secret" not in repr(ServerSettings(api_key="secret"))


def test_admission_refuses_past_its_bound_and_learns() -> None:
    pytest.importorskip("fastapi")
    from types import SimpleNamespace

    from cprs_integrations.server.admission import Admission
    from cprs_integrations.server.errors import ApiError

    engine = SimpleNamespace(
        scheduler=SimpleNamespace(max_queue_windows=8, workers=[object()]), batch_size=4, window_tokens=64
    )
    gate = Admission(engine)  # type: ignore[arg-type]
    assert gate.limit == 8 + 4 and gate.estimate(["x" * 128, "", "y"]) == 2
    with gate.admit(["x" * 128 * 20], retry_after_s=2):  # 20 windows: larger than the bound, admitted alone
        assert gate.in_flight == 20
        with pytest.raises(ApiError) as caught, gate.admit(["x"], retry_after_s=2):
            pass
        assert caught.value.status == 429 and caught.value.headers == {"Retry-After": "2"}
    assert gate.in_flight == 0
    before = gate.windows_per_char
    gate.learn(10_000, 500)  # the engine says 1 window per 20 characters
    assert before < gate.windows_per_char < 1 / 20
    gate.learn(100, 50)  # too short to learn from
    assert (
        Admission(
            SimpleNamespace(
                scheduler=SimpleNamespace(max_queue_windows=None, workers=[1]), batch_size=1, window_tokens=64
            )
        ).limit
        is None
    )  # type: ignore[arg-type]


def test_serve_refuses_an_open_non_loopback_bind(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("fastapi")
    from cprs_integrations.cli import main
    from cprs_integrations.server.run import is_loopback

    monkeypatch.delenv("CPRS_API_KEY", raising=False)
    monkeypatch.delenv("CPRS_API_KEY_FILE", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--model", "/nonexistent"]) == 2
    assert "without an API key" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
