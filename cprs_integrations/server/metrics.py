"""Prometheus metrics (``GET /metrics``, text format through prometheus-client), in a registry of the app's own.

=====================================================  =========  ================================================
metric                                                 kind       what
=====================================================  =========  ================================================
``cprs_http_requests_total{route,method,status}``      counter    answered requests
``cprs_http_request_duration_seconds{route}``          histogram  latency, body read to last byte sent
``cprs_http_requests_in_flight``                       gauge      requests being served
``cprs_critic_tokens_total{route}``                    counter    critic tokens of the texts served
``cprs_tokens_per_second``                             gauge      critic tokens of the texts served per second,
                                                                  over the last ``THROUGHPUT_WINDOW_S``
``cprs_queue_depth_windows``                           gauge      windows waiting in the engine's queue
``cprs_windows_in_flight``                             gauge      estimated windows of the requests being served
``cprs_batch_fill_ratio``                              gauge      windows per forward pass / batch size, since start
``cprs_engine_ready``                                  gauge      1 once the critic is loaded
``cprs_engine_<stat>_total``                           counter    every counter of ``engine.stats()`` (requests,
                                                                  windows, batches, tokens, padding_tokens,
                                                                  oom_splits, queue_wait_s)
=====================================================  =========  ================================================
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: Seconds over which ``cprs_tokens_per_second`` is measured.
THROUGHPUT_WINDOW_S = 60.0
#: Latency buckets, in seconds (a 7B critic on long inputs takes minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Engine stats that are levels, not running totals.
_ENGINE_GAUGES = ("queued_windows",)


class ServerMetrics:
    """The app's metrics.

    Args:
        engine_stats: Returns ``engine.stats()``, the engine's batch size and the server's windows in flight (see
            :mod:`~cprs_integrations.server.admission`), or ``None`` while the critic loads.
    """

    def __init__(self, engine_stats: Callable[[], tuple[dict[str, float], int, int] | None]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cprs_http_requests", "Requests answered.", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cprs_http_request_duration_seconds",
            "Request latency in seconds.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("cprs_http_requests_in_flight", "Requests being served.", registry=self.registry)
        self.critic_tokens = Counter(
            "cprs_critic_tokens", "Critic tokens of the texts served.", ["route"], registry=self.registry
        )
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.registry.register(_EngineCollector(engine_stats, self.tokens_per_second))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def add_tokens(self, route: str, tokens: int) -> None:
        """Count the critic tokens of one served request (for the throughput)."""
        self.critic_tokens.labels(route).inc(tokens)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, tokens))
            self._trim(now)

    def tokens_per_second(self) -> float:
        """Critic tokens served per second over the last :data:`THROUGHPUT_WINDOW_S` (or since start)."""
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            total = sum(tokens for _, tokens in self._recent)
        return total / max(min(THROUGHPUT_WINDOW_S, now - self._started), 1e-9)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - THROUGHPUT_WINDOW_S:
            self._recent.popleft()


class _EngineCollector(Collector):
    """Reads the engine's counters at scrape time."""

    def __init__(
        self,
        engine_stats: Callable[[], tuple[dict[str, float], int, int] | None],
        tokens_per_second: Callable[[], float],
    ):
        self._engine_stats, self._tokens_per_second = engine_stats, tokens_per_second

    def describe(self) -> list[Metric]:
        return []  # names depend on engine.stats(): collected, not pre-declared

    def collect(self) -> Iterator[Metric]:
        found = self._engine_stats()
        yield GaugeMetricFamily("cprs_engine_ready", "1 once the critic is loaded.", value=float(found is not None))
        yield GaugeMetricFamily(
            "cprs_tokens_per_second",
            f"Critic tokens of the texts served per second, over the last {THROUGHPUT_WINDOW_S:g} s.",
            value=self._tokens_per_second(),
        )
        if found is None:
            return
        stats, batch_size, in_flight = found
        yield GaugeMetricFamily(
            "cprs_windows_in_flight",
            "Estimated windows of the requests being served (the admission count; 429 past its bound).",
            value=in_flight,
        )
        yield GaugeMetricFamily(
            "cprs_queue_depth_windows", "Windows waiting in the engine's queue.", value=stats.get("queued_windows", 0)
        )
        batches = stats.get("batches", 0)
        fill = stats.get("windows", 0) / (batches * batch_size) if batches else 0.0
        yield GaugeMetricFamily(
            "cprs_batch_fill_ratio", "Windows per forward pass over the batch size, since start.", value=fill
        )
        for name, value in stats.items():
            metric = f"cprs_engine_{_metric_name(name)}"
            if name in _ENGINE_GAUGES:
                yield GaugeMetricFamily(metric, f"engine.stats()['{name}'] now.", value=float(value))
            else:
                yield CounterMetricFamily(metric, f"engine.stats()['{name}'] since start.", value=float(value))


def _metric_name(name: Any) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", str(name))
