"""Readiness = memory under the threshold; Redis reachability reported, state changes logged.

Only the instance's own sickness (memory) makes it unready (503): every instance shares one
Redis, so a Redis outage answered 503 here would make the load balancer eject them all at
once. Redis unreachable is 200 with status DEGRADED (and the todo routes answer 503 storage
unavailable, a status NGINX neither retries nor counts against the instance); so are writes
that no replica acknowledges (when the instance waits for one)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.exceptions import ResponseError

from .cgroup import MB, MemoryMonitor, MemoryReading
from .logs import JsonLogger
from .metrics import Metrics
from .store import TodoStore


class HealthChecker:
    def __init__(
        self,
        instance: str,
        monitor: MemoryMonitor,
        store: TodoStore,
        metrics: Metrics,
        logger: JsonLogger,
        redis_ttl: float = 0.5,
        redis_timeout: float = 0.5,
    ) -> None:
        self.instance = instance
        self.monitor = monitor
        self.store = store
        self.metrics = metrics
        self.log = logger
        self.redis_ttl = redis_ttl
        self.redis_timeout = redis_timeout
        self._redis_ok: bool | None = None
        self._redis_at = 0.0
        self._status: str | None = None
        self._mem_over: bool | None = None
        self._last_reading: MemoryReading | None = None
        metrics.unhealthy_ratio.set(monitor.threshold_percent / 100)

    def memory(self) -> tuple[bool, MemoryReading]:
        """Cached memory reading and whether it is over the threshold (hot path)."""
        r = self.monitor.read()
        if r is self._last_reading:  # same cached reading: nothing new to set or log
            return bool(self._mem_over), r
        self._last_reading = r
        over = self.monitor.over_threshold(r)
        # healthy = ready for traffic = what the load balancer sees (a DEGRADED instance is not
        # sick: its peers share its storage): set on every reading, so a scrape of /metrics
        # alone keeps it current, with no health check between two scrapes
        self.metrics.healthy.set(0 if over else 1)
        self.metrics.memory_used.set(r.used_bytes)
        self.metrics.memory_limit.set(r.limit_bytes)
        self.metrics.memory_unhealthy_threshold.set(self.monitor.threshold_bytes(r))
        if over != self._mem_over:
            if over:
                self.log.warning(
                    "memory over threshold: shedding load, marking unhealthy",
                    extra=self._mem_fields(r),
                )
            elif self._mem_over is not None:
                self.log.info("memory back under threshold", extra=self._mem_fields(r))
            self._mem_over = over
        return over, r

    def mark_redis_down(self) -> None:
        self._redis_ok = False
        self._redis_at = time.monotonic()

    async def redis_ok(self) -> bool:
        now = time.monotonic()
        if self._redis_ok is not None and now - self._redis_at < self.redis_ttl:
            return self._redis_ok
        try:
            ok = await asyncio.wait_for(self.store.ping(), self.redis_timeout)
        except ResponseError:
            ok = True  # it answered (an error reply): reachable, which is all this reports
        except Exception:  # unreachable, timed out, refused the login
            ok = False
            self.metrics.redis_errors.inc()
        self._redis_ok = ok
        self._redis_at = time.monotonic()
        return ok

    def _mem_fields(self, r: MemoryReading) -> dict[str, Any]:
        return {
            "rssMB": round(r.rss_bytes / MB, 1),
            "usedMB": round(r.used_bytes / MB, 1),
            "limitMB": round(r.limit_bytes / MB, 1),
            "memoryPercent": round(r.percent, 1),
            "thresholdPercent": self.monitor.threshold_percent,
            "memorySource": r.source,
        }

    async def check(self) -> tuple[int, dict[str, Any]]:
        over, r = self.memory()
        redis = await self.redis_ok()
        reasons: list[str] = []
        if over:
            reasons.append(
                f"memory {r.percent:.1f}% >= threshold {self.monitor.threshold_percent}%"
            )
        if not redis:
            reasons.append("redis unreachable")
        # waiting for replicas: how many acknowledged the latest write or check
        replicas = self.store.replicas if self.store.replica_wait_ms else None
        unreplicated = redis and replicas == 0
        if unreplicated:
            reasons.append("no replica acknowledges writes: they stand on the primary alone")
        status = "UNHEALTHY" if over else ("DEGRADED" if not redis or unreplicated else "OK")
        body: dict[str, Any] = {
            "status": status,
            "instance": self.instance,
            **self._mem_fields(r),
            "redis": "ok" if redis else "down",
        }
        if replicas is not None:
            body["replicas"] = replicas
            self.metrics.redis_replicas.set(replicas)
        if reasons:
            body["reasons"] = reasons
        if status != self._status:
            fields = {k: v for k, v in body.items() if k != "instance"}
            if status != "OK":
                self.log.warning(f"health: {status}", extra=fields)
            elif self._status is not None:
                self.log.info("health: back to OK", extra=fields)
            self._status = status
        return (503 if over else 200), body
