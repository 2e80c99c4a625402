"""Prometheus metrics, one registry per app instance (so tests can build many apps).

The unhealthy threshold is exported as data (``todo_api_unhealthy_ratio``,
``todo_api_memory_unhealthy_threshold_bytes``) so alert rules compare against it instead of
repeating the number: ``todo_api_memory_used_bytes / todo_api_memory_limit_bytes >=
todo_api_unhealthy_ratio`` is the app's own shedding condition."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

ROUTE_LABELS = ("method", "route", "status")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "todo_api_requests_total", "HTTP requests on the public listener",
            ROUTE_LABELS, registry=self.registry,
        )
        self.latency = Histogram(
            "todo_api_request_duration_seconds", "HTTP request latency on the public listener",
            ROUTE_LABELS, buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.healthy = self._gauge(
            "todo_api_healthy",
            "1 when the instance is ready: memory under the threshold (/api/health 200, OK or "
            "DEGRADED); Redis being unreachable (DEGRADED) does not make it 0",
        )
        self.memory_used = self._gauge(
            "todo_api_memory_used_bytes",
            "Memory in use (cgroup working set, or RSS in fallback mode)",
        )
        self.memory_limit = self._gauge(
            "todo_api_memory_limit_bytes",
            "Memory limit (cgroup limit, or TODO_API_MEMORY_LIMIT_MB in fallback mode)",
        )
        self.unhealthy_ratio = self._gauge(
            "todo_api_unhealthy_ratio",
            "Share of the memory limit at or over which the instance is unhealthy and sheds "
            "load (TODO_API_UNHEALTHY_PERCENT / 100)",
        )
        self.memory_unhealthy_threshold = self._gauge(
            "todo_api_memory_unhealthy_threshold_bytes",
            "Memory in use at or over which the instance is unhealthy "
            "(todo_api_memory_limit_bytes * todo_api_unhealthy_ratio)",
        )
        self.shed = self._counter(
            "todo_api_shed_requests_total",
            "Requests refused with 429 because memory was over the threshold",
        )
        self.idempotent_replays = self._counter(
            "todo_api_idempotent_replays_total",
            "POSTs answered from a stored Idempotency-Key response",
        )
        self.redis_errors = self._counter(
            "todo_api_redis_errors_total",
            "Redis operations that failed (unreachable, timeout, full, other errors)",
        )

        self.redis_replicas = self._gauge(
            "todo_api_redis_replicas",
            "Replicas that acknowledged the instance's latest Redis write or check (only with "
            "TODO_API_REDIS_REPLICA_WAIT_MS); 0 = writes stand on the primary alone",
        )

    def count_from(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A counter whose value another object keeps (read at scrape time)."""
        self.registry.register(_ReadCounter(name, documentation, read))

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, registry=self.registry)

    def _counter(self, name: str, documentation: str) -> Counter:
        return Counter(name, documentation, registry=self.registry)


class _ReadCounter(Collector):
    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name.removesuffix("_total"), self.documentation, self.read())
