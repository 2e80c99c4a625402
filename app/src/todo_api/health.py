"""Readiness = memory under the threshold AND Redis reachable; state changes logged once."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .cgroup import MB, MemoryMonitor, MemoryReading
from .metrics import Metrics
from .store import TodoStore


class HealthChecker:
    def __init__(
        self,
        instance: str,
        monitor: MemoryMonitor,
        store: TodoStore,
        metrics: Metrics,
        logger: logging.Logger,
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
        self._ready: bool | None = None
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
        except Exception:
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
        ready = not reasons
        body: dict[str, Any] = {
            "status": "OK" if ready else "UNHEALTHY",
            "instance": self.instance,
            **self._mem_fields(r),
            "redis": "ok" if redis else "down",
        }
        if reasons:
            body["reasons"] = reasons
        self.metrics.healthy.set(1 if ready else 0)
        if ready != self._ready:
            fields = {k: v for k, v in body.items() if k != "instance"}
            if not ready:
                self.log.warning("health: UNHEALTHY", extra=fields)
            elif self._ready is not None:
                self.log.info("health: back to OK", extra=fields)
            self._ready = ready
        return (200 if ready else 503), body
