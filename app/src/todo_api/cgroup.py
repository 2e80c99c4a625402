"""Memory in use vs the limit of this process's own cgroup (v2 or v1), with an RSS fallback."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

MemorySource = Literal["cgroup-v2", "cgroup-v1", "fallback"]

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE (9223372036854771712 on x86_64);
# anything at or above 2**60 bytes is treated as unlimited.
V1_UNLIMITED = 1 << 60
MB = 1024 * 1024


@dataclass(frozen=True)
class MemoryReading:
    used_bytes: int
    limit_bytes: int
    rss_bytes: int
    source: MemorySource

    @property
    def percent(self) -> float:
        return 100.0 * self.used_bytes / self.limit_bytes if self.limit_bytes > 0 else 0.0


@dataclass(frozen=True)
class CgroupPaths:
    v2_dir: Path | None
    v1_dir: Path | None


def parse_proc_self_cgroup(text: str) -> tuple[str | None, str | None]:
    """Return (v2 path, v1 memory path) from the text of /proc/self/cgroup."""
    v2: str | None = None
    v1: str | None = None
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def locate(cgroup_root: str, proc_self_cgroup: str) -> CgroupPaths:
    """Find this process's memory cgroup directory (v2 preferred when it has memory files)."""
    try:
        text = Path(proc_self_cgroup).read_text()
    except OSError:
        return CgroupPaths(None, None)
    v2, v1 = parse_proc_self_cgroup(text)
    root = Path(cgroup_root)
    v2_dir: Path | None = None
    v1_dir: Path | None = None
    if v2 is not None:
        cand = root / v2.lstrip("/")
        if (cand / "memory.max").exists() or (cand / "memory.current").exists():
            v2_dir = cand
    if v1 is not None:
        # Inside a container without a cgroup namespace the host path may not exist:
        # fall back to the controller's mount root, which is then the container's cgroup.
        for cand in (root / "memory" / v1.lstrip("/"), root / "memory"):
            if (cand / "memory.usage_in_bytes").exists():
                v1_dir = cand
                break
    return CgroupPaths(v2_dir, v1_dir)


def _read_int(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    if raw == "max":
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        with path.open() as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
    except (OSError, ValueError):
        pass
    return 0


def read_memory(paths: CgroupPaths, fallback_limit_bytes: int, rss_bytes: int) -> MemoryReading:
    """Working set (usage - inactive_file) vs limit; RSS vs fallback limit when unlimited."""
    if paths.v2_dir is not None:
        limit = _read_int(paths.v2_dir / "memory.max")
        usage = _read_int(paths.v2_dir / "memory.current")
        if limit is not None and usage is not None and limit > 0:
            inactive = _stat_value(paths.v2_dir / "memory.stat", "inactive_file")
            return MemoryReading(max(usage - inactive, 0), limit, rss_bytes, "cgroup-v2")
    if paths.v1_dir is not None:
        limit = _read_int(paths.v1_dir / "memory.limit_in_bytes")
        usage = _read_int(paths.v1_dir / "memory.usage_in_bytes")
        if limit is not None and usage is not None and 0 < limit < V1_UNLIMITED:
            inactive = _stat_value(paths.v1_dir / "memory.stat", "total_inactive_file")
            return MemoryReading(max(usage - inactive, 0), limit, rss_bytes, "cgroup-v1")
    return MemoryReading(rss_bytes, fallback_limit_bytes, rss_bytes, "fallback")


class MemoryMonitor:
    """Cached memory reading: cheap enough for the hot path (one read per ``ttl`` seconds)."""

    def __init__(
        self,
        cgroup_root: str,
        proc_self_cgroup: str,
        fallback_limit_mb: int,
        threshold_percent: int,
        ttl: float = 0.2,
    ) -> None:
        self.cgroup_root = cgroup_root
        self.proc_self_cgroup = proc_self_cgroup
        self.fallback_limit_bytes = fallback_limit_mb * MB
        self.threshold_percent = threshold_percent
        self.ttl = ttl
        self._paths = locate(cgroup_root, proc_self_cgroup)
        self._proc = psutil.Process(os.getpid())
        self._cached: MemoryReading | None = None
        self._at = 0.0

    def read(self) -> MemoryReading:
        now = time.monotonic()
        if self._cached is None or now - self._at >= self.ttl:
            rss = int(self._proc.memory_info().rss)
            self._cached = read_memory(self._paths, self.fallback_limit_bytes, rss)
            self._at = now
        return self._cached

    def invalidate(self) -> None:
        self._cached = None

    def over_threshold(self, reading: MemoryReading | None = None) -> bool:
        r = reading or self.read()
        return r.percent >= self.threshold_percent

    def threshold_bytes(self, reading: MemoryReading) -> float:
        """Memory in use at/over which ``over_threshold`` is true, for this reading's limit."""
        return reading.limit_bytes * self.threshold_percent / 100
