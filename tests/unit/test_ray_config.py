"""What build_app and compress_dataset hand to Ray, checked without a cluster: the engine's batching settings, device
and queue defaults per actor, threads, the actors' environment, Serve's options passed through, bad arguments."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("ray.data")
pytest.importorskip("fastapi")

from cprs_integrations.ray._actors import ONEDNN_CACHE_ENV, engine_kwargs_for, runtime_env_for, torch_threads_for
from cprs_integrations.ray.serve import DEFAULT_MAX_ONGOING_REQUESTS, OneRequestIdHeader, build_app, replica_config
from cprs_integrations.server.settings import DEFAULT_MAX_QUEUE_WINDOWS


def test_batching_settings_map_onto_the_engine() -> None:
    config, actor_options = replica_config("critic", max_batch_size=8, batch_wait_timeout_s=0.01)
    assert config.model == "critic"
    assert config.engine_kwargs == {
        "device": "cpu",
        "batch_size": 8,
        "max_wait_ms": 10.0,
        "max_queue_windows": DEFAULT_MAX_QUEUE_WINDOWS,
    }
    assert (config.torch_threads, config.settings) == (1, None)
    assert actor_options == {"num_cpus": 1, "runtime_env": {"env_vars": ONEDNN_CACHE_ENV}}


def test_a_gpu_replica_gets_cuda_and_the_callers_settings_win() -> None:
    config, actor_options = replica_config(
        None,
        ray_actor_options={"num_gpus": 0.5, "num_cpus": 3, "runtime_env": {"env_vars": {"X": "1"}}},
        engine_kwargs={"dtype": "bfloat16", "max_queue_windows": 64},
    )
    assert config.engine_kwargs == {"dtype": "bfloat16", "max_queue_windows": 64, "device": "cuda"}
    assert config.torch_threads == 3
    assert actor_options["runtime_env"]["env_vars"] == {**ONEDNN_CACHE_ENV, "X": "1"}
    assert runtime_env_for({"env_vars": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}})["env_vars"] == {
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"
    }


def test_build_app_passes_serve_options_through() -> None:
    app = build_app(
        None, autoscaling_config={"min_replicas": 1, "max_replicas": 3}, options={"max_queued_requests": 100}
    )
    config = app._bound_deployment._deployment_config  # Serve's own record of the options
    assert config.max_ongoing_requests == DEFAULT_MAX_ONGOING_REQUESTS
    assert (config.autoscaling_config.min_replicas, config.autoscaling_config.max_replicas) == (1, 3)
    assert config.max_queued_requests == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 4, "engine_kwargs": {"batch_size": 4}}, "max_batch_size or engine_kwargs"),
        ({"batch_wait_timeout_s": -1}, "batch_wait_timeout_s"),
        ({"max_ongoing_requests": 0}, "max_ongoing_requests"),
        ({"options": {"num_replicas": 2}}, "as build_app arguments"),
        ({"torch_threads": 0}, "torch_threads"),
    ],
)
def test_build_app_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_app(None, **kwargs)


def test_actor_defaults() -> None:
    assert engine_kwargs_for(None, 0) == {"device": "cpu"}
    assert engine_kwargs_for({"device": "cuda:1"}, 1, batch_size=None) == {"device": "cuda:1"}
    assert (torch_threads_for(None, 2.5), torch_threads_for(None, None), torch_threads_for(4, 1)) == (3, 1, 4)


async def test_the_request_id_header_is_left_to_serves_proxy() -> None:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"x-request-id", b"abc")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await OneRequestIdHeader(app)({"type": "http"}, None, send)
    assert sent[0]["headers"] == [(b"content-type", b"application/json")]
    assert sent[1]["body"] == b"{}"
