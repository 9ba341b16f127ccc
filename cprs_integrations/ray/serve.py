"""build_app: the app of ``cprs serve`` as a Ray Serve application, one engine per replica.

The replica mounts the very FastAPI app :func:`~cprs_integrations.server.app.create_app` builds (``serve.ingress``
with a builder that Serve calls when the replica starts), so routes, schemas, authentication, limits, metrics and
error bodies are those of ``cprs serve``, and :class:`~cprs_integrations.api.client.RemoteCPRSEngine` works against
it unchanged.

Batching: the requests Serve routes to one replica run concurrently in its event loop (up to
``max_ongoing_requests``) and all await the replica's one engine, whose scheduler already batches the windows of
concurrent requests into shared forward passes (``batch_size`` windows, ``max_wait_ms`` for a fuller batch). So
``max_batch_size`` and ``batch_wait_timeout_s`` set that scheduler; no ``@serve.batch`` is stacked in front of it,
which would add a second wait and batch requests (of any number of windows) instead of windows.

Admission: Serve's ``max_ongoing_requests`` bounds the requests in a replica (the rest wait in Serve's queue, bounded
by ``max_queued_requests`` if you pass it in ``options``: Serve answers 503 past it, which RemoteCPRSEngine
retries); the engine's own bound (``max_queue_windows``, 4096 windows as in ``cprs serve``) still answers 429 for a
replica flooded with large requests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cprs_integrations.ray._actors import engine_kwargs_for, positive_int, runtime_env_for, torch_threads_for
from cprs_integrations.ray._deps import missing

try:
    from ray import serve
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing(e) from e

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cprs_integrations.server.settings import ServerSettings

#: Requests one replica serves at once by default (Serve's own default, 5, would leave the engine's batches nearly
#: empty: it batches windows of the requests in flight). Past it requests wait in Serve's queue.
DEFAULT_MAX_ONGOING_REQUESTS = 32
#: Name of the deployment.
DEPLOYMENT_NAME = "CPRSServer"
#: Deployment options ``build_app`` sets itself, which ``options`` may not repeat.
_OWN_OPTIONS = frozenset({"num_replicas", "ray_actor_options", "max_ongoing_requests", "autoscaling_config"})


@dataclass(frozen=True)
class ReplicaConfig:
    """What a replica needs to build its app (pickled with the deployment).

    Attributes:
        model: Critic folder or hub id; ``None``: the embedded default.
        engine_kwargs: :meth:`CPRSEngine.from_pretrained` arguments.
        settings: The server's settings; ``None``: :meth:`ServerSettings.from_env` on the replica (the API key
            from the replica's ``CPRS_API_KEY`` / ``CPRS_API_KEY_FILE``).
        torch_threads: torch threads of the replica process.
    """

    model: str | None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    settings: ServerSettings | None = None
    torch_threads: int = 1


def replica_app(config: ReplicaConfig) -> FastAPI:
    """Load the engine and build the app around it: what each replica runs once, when it starts (so Serve routes
    nothing to it before the critic is loaded)."""
    import torch

    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.server.app import create_app
    from cprs_integrations.server.settings import ServerSettings

    torch.set_num_threads(config.torch_threads)
    settings = config.settings if config.settings is not None else ServerSettings.from_env()
    engine = CPRSEngine.from_pretrained(config.model, **config.engine_kwargs)
    app = create_app(engine, settings=settings)
    app.add_middleware(OneRequestIdHeader)  # outermost
    return app


class OneRequestIdHeader:
    """ASGI middleware: drop the app's ``X-Request-ID`` answer header, because Serve's proxy writes one on every
    answer. The id is the same: the proxy puts its id (the client's, or a new one) on the request, and the app
    takes it from there (for its access log and ``error.request_id``). Without this the header comes twice."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_without_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_without_id)


def replica_config(
    model: str | os.PathLike[str] | None,
    *,
    ray_actor_options: Mapping[str, Any] | None = None,
    engine_kwargs: Mapping[str, Any] | None = None,
    max_batch_size: int | None = None,
    batch_wait_timeout_s: float | None = None,
    settings: ServerSettings | None = None,
    torch_threads: int | None = None,
) -> tuple[ReplicaConfig, dict[str, Any]]:
    """What each replica loads, and the replicas' actor options: :func:`build_app`'s arguments, checked and
    completed with their defaults (the batching settings mapped onto the engine's).

    Raises:
        ValueError: a batching setting given twice (here and in ``engine_kwargs``), an invalid value.
    """
    from cprs_integrations.server.settings import DEFAULT_MAX_QUEUE_WINDOWS

    given = dict(engine_kwargs or {})
    for name, ours, value in (
        ("batch_size", "max_batch_size", max_batch_size),
        ("max_wait_ms", "batch_wait_timeout_s", batch_wait_timeout_s),
    ):
        if value is not None and name in given:
            raise ValueError(f"give {ours} or engine_kwargs[{name!r}], not both")
    if batch_wait_timeout_s is not None and not batch_wait_timeout_s >= 0:
        raise ValueError(f"batch_wait_timeout_s must be >= 0, got {batch_wait_timeout_s!r}")
    actor_options = dict(ray_actor_options) if ray_actor_options is not None else {"num_cpus": 1}
    actor_options["runtime_env"] = runtime_env_for(actor_options.get("runtime_env"))
    config = ReplicaConfig(
        model=None if model is None else os.fspath(model),
        engine_kwargs=engine_kwargs_for(
            given,
            actor_options.get("num_gpus", 0) or 0,
            batch_size=max_batch_size,
            max_wait_ms=None if batch_wait_timeout_s is None else 1000.0 * batch_wait_timeout_s,
            max_queue_windows=DEFAULT_MAX_QUEUE_WINDOWS,
        ),
        settings=settings,
        torch_threads=torch_threads_for(torch_threads, actor_options.get("num_cpus", 1)),
    )
    return config, actor_options


class CPRSReplica:
    """One Serve replica: the ``cprs serve`` app around one engine (built by :func:`replica_app`)."""


def build_app(
    model: str | os.PathLike[str] | None = None,
    *,
    num_replicas: int | str | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    autoscaling_config: Mapping[str, Any] | None = None,
    max_batch_size: int | None = None,
    batch_wait_timeout_s: float | None = None,
    engine_kwargs: Mapping[str, Any] | None = None,
    settings: ServerSettings | None = None,
    torch_threads: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> serve.Application:
    """A Serve application with the HTTP API of ``cprs serve`` (``/v1/compress``, ``/v1/score``, ``/v1/models``,
    the official route, ``/healthz``, ``/readyz``, ``/metrics``): run it with ``serve.run(build_app(...))``.

    Args:
        model: Critic folder or hub id, loaded once by each replica; ``None``: the embedded default critic.
        num_replicas: Replicas (Serve's default: 1; ``"auto"`` or ``autoscaling_config`` for autoscaling).
        ray_actor_options: Resources of each replica, e.g. ``{"num_gpus": 1}`` or ``{"num_gpus": 0.5}`` (two
            replicas per GPU); default ``{"num_cpus": 1}``. ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=4`` is added to its
            ``runtime_env`` unless set (bounded CPU memory, as ``cprs serve`` does).
        max_ongoing_requests: Requests a replica serves at once; the engine batches their windows (default 32).
        autoscaling_config: Serve's autoscaling settings (``min_replicas``, ``max_replicas``,
            ``target_ongoing_requests``, ...), passed through.
        max_batch_size: Windows per forward pass of the replica's engine (the engine's ``batch_size``; default the
            critic's). Windows, not requests: one request may hold many.
        batch_wait_timeout_s: How long a free critic waits for a fuller batch (the engine's ``max_wait_ms``;
            default 2 ms).
        engine_kwargs: More :meth:`CPRSEngine.from_pretrained` arguments (``dtype``, ``window_tokens``,
            ``max_queue_windows`` (default 4096, as ``cprs serve``), ...); ``device`` defaults to ``"cuda"`` when
            the replica has a GPU, else ``"cpu"``.
        settings: API key and limits (:class:`~cprs_integrations.server.settings.ServerSettings`). ``None``: each
            replica reads them from its environment, so the key stays out of the pickled application (set
            ``CPRS_API_KEY`` or ``CPRS_API_KEY_FILE`` in the replicas' environment).
        torch_threads: torch threads per replica; default its ``num_cpus`` rounded up.
        options: Any other ``@serve.deployment`` option (``name``, ``max_queued_requests``,
            ``health_check_period_s``, ``graceful_shutdown_timeout_s``, ...).

    Returns:
        The bound application (``Deployment.bind()``).

    Raises:
        ValueError: a batching setting given twice (here and in ``engine_kwargs``), an option repeated in
            ``options``, an invalid value.

    Examples:
        >>> from ray import serve
        >>> from cprs_integrations.ray import build_app
        >>> app = build_app("Tongyi-Zhiwen/QwenLong-CPRS-7B", ray_actor_options={"num_gpus": 1},
        ...                 autoscaling_config={"min_replicas": 1, "max_replicas": 8})  # doctest: +SKIP
        >>> serve.run(app, route_prefix="/")  # doctest: +SKIP
    """
    positive_int("max_ongoing_requests", max_ongoing_requests)
    extra = dict(options or {})
    repeated = sorted(_OWN_OPTIONS & set(extra))
    if repeated:
        raise ValueError(f"pass {repeated} as build_app arguments, not in options")
    config, actor_options = replica_config(
        model,
        ray_actor_options=ray_actor_options,
        engine_kwargs=engine_kwargs,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        settings=settings,
        torch_threads=torch_threads,
    )

    def build_asgi_app() -> FastAPI:  # a plain function: Serve calls it on each replica as it starts
        return replica_app(config)

    deployment_options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": max_ongoing_requests,
        **extra,
    }
    if num_replicas is not None:
        deployment_options["num_replicas"] = num_replicas
    if autoscaling_config is not None:
        deployment_options["autoscaling_config"] = dict(autoscaling_config)
    deployment = serve.deployment(serve.ingress(build_asgi_app)(CPRSReplica))
    return deployment.options(**deployment_options).bind()
