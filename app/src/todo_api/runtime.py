"""Everything one instance shares between its public and management apps."""

from __future__ import annotations

import asyncio

from .cgroup import MemoryMonitor
from .config import Settings
from .health import HealthChecker
from .logs import JsonLogger, get_logger
from .metrics import Metrics
from .store import TodoStore


class Runtime:
    def __init__(self, settings: Settings, logger: JsonLogger | None = None) -> None:
        self.settings = settings
        self.log = logger or get_logger()
        self.metrics = Metrics()
        self.monitor = MemoryMonitor(
            settings.cgroup_root,
            settings.proc_self_cgroup,
            settings.memory_limit_mb,
            settings.unhealthy_percent,
        )
        self.store = TodoStore(settings)
        self.metrics.count_from(
            "todo_api_redis_unreplicated_writes_total",
            "Writes no replica acknowledged within TODO_API_REDIS_REPLICA_WAIT_MS (kept on the "
            "primary alone)",
            lambda: self.store.unreplicated_writes,
        )
        self.metrics.count_from(
            "todo_api_redis_failover_retries_total",
            "Redis operations tried again while looking for the primary (TODO_API_REDIS_"
            "FAILOVER_WAIT_MS)",
            lambda: self.store.failover_retries,
        )
        self.health = HealthChecker(
            settings.instance, self.monitor, self.store, self.metrics, self.log
        )
        self.hog: list[bytearray] = []
        self.stress_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.store.close()
