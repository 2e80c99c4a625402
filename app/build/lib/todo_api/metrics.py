"""Prometheus metrics, one registry per app instance (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "todo_api_requests_total",
            "HTTP requests on the public listener",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "todo_api_request_duration_seconds",
            "HTTP request latency on the public listener",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.healthy = Gauge(
            "todo_api_healthy",
            "1 when the instance is ready (memory under threshold and Redis reachable)",
            registry=self.registry,
        )
        self.memory_used = Gauge(
            "todo_api_memory_used_bytes",
            "Memory in use (cgroup working set, or RSS in fallback mode)",
            registry=self.registry,
        )
        self.memory_limit = Gauge(
            "todo_api_memory_limit_bytes",
            "Memory limit (cgroup limit, or TODO_API_MEMORY_LIMIT_MB in fallback mode)",
            registry=self.registry,
        )
        self.shed = Counter(
            "todo_api_shed_requests_total",
            "Requests refused with 503 because memory was over the threshold",
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "todo_api_idempotent_replays_total",
            "POSTs answered from a stored Idempotency-Key response",
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "todo_api_redis_errors_total",
            "Redis operations that failed (connection, timeout, other errors)",
            registry=self.registry,
        )
