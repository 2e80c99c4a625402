"""Configuration from TODO_API_* environment variables."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(ValueError):
    """Invalid configuration; the message says which variable and why."""


@dataclass(frozen=True)
class ManagementBind:
    """Where the management listener binds: a unix socket path or a loopback host:port."""

    uds: str | None = None
    host: str | None = None
    port: int | None = None

    def describe(self) -> str:
        if self.uds is not None:
            return f"unix:{self.uds}"
        return f"{self.host}:{self.port}"


def parse_management(value: str) -> ManagementBind:
    """Parse ``unix:/path`` or ``HOST:PORT``; refuse any TCP host that is not loopback."""
    value = value.strip()
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path.startswith("/"):
            raise ConfigError(f"TODO_API_MANAGEMENT: unix socket path must be absolute: {value!r}")
        return ManagementBind(uds=path)
    host, sep, port_s = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(
            f"TODO_API_MANAGEMENT: expected 'unix:/path' or 'HOST:PORT', got {value!r}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"TODO_API_MANAGEMENT: bad port in {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"TODO_API_MANAGEMENT: port out of range in {value!r}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"TODO_API_MANAGEMENT: TCP host must be a loopback IP address, got {host!r}"
        ) from None
    if not addr.is_loopback:
        raise ConfigError(
            f"TODO_API_MANAGEMENT: refusing non-loopback address {host!r}; the management "
            "plane must never be reachable from the network (use unix:/path or 127.0.0.1:PORT)"
        )
    return ManagementBind(host=str(addr), port=port)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    instance: str
    host: str = "127.0.0.1"
    port: int = 8000
    management: ManagementBind = ManagementBind(uds="/run/todo-api-1/manage.sock")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str | None = None
    memory_limit_mb: int = 512
    unhealthy_percent: int = 80
    cgroup_root: str = "/sys/fs/cgroup"
    proc_self_cgroup: str = "/proc/self/cgroup"
    idempotency_ttl: int = 86400
    idempotency_pending_ttl: int = 10
    stress_target_mb: int = 400
    stress_chunk_mb: int = 50
    max_body_bytes: int = 16 * 1024
    retry_after_seconds: int = 5
    graceful_timeout: int = 10

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        instance = e.get("TODO_API_INSTANCE", "").strip()
        if not instance:
            raise ConfigError("TODO_API_INSTANCE is required (e.g. TODO_API_INSTANCE=1)")
        mgmt_raw = e.get("TODO_API_MANAGEMENT", "").strip() or (
            f"unix:/run/todo-api-{instance}/manage.sock"
        )
        percent = _int(e, "TODO_API_UNHEALTHY_PERCENT", 80, minimum=1)
        if percent > 100:
            raise ConfigError(f"TODO_API_UNHEALTHY_PERCENT: must be <= 100, got {percent}")
        return cls(
            instance=instance,
            host=e.get("TODO_API_HOST", "").strip() or "127.0.0.1",
            port=_int(e, "TODO_API_PORT", 8000),
            management=parse_management(mgmt_raw),
            redis_url=e.get("TODO_API_REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0",
            redis_password=e.get("TODO_API_REDIS_PASSWORD") or None,
            memory_limit_mb=_int(e, "TODO_API_MEMORY_LIMIT_MB", 512, minimum=1),
            unhealthy_percent=percent,
            cgroup_root=e.get("TODO_API_CGROUP_ROOT", "").strip() or "/sys/fs/cgroup",
            proc_self_cgroup=e.get("TODO_API_PROC_SELF_CGROUP", "").strip()
            or "/proc/self/cgroup",
            idempotency_ttl=_int(e, "TODO_API_IDEMPOTENCY_TTL", 86400, minimum=1),
            idempotency_pending_ttl=_int(e, "TODO_API_IDEMPOTENCY_PENDING_TTL", 10, minimum=1),
            stress_target_mb=_int(e, "TODO_API_STRESS_TARGET_MB", 400, minimum=1),
            stress_chunk_mb=_int(e, "TODO_API_STRESS_CHUNK_MB", 50, minimum=1),
            graceful_timeout=_int(e, "TODO_API_GRACEFUL_TIMEOUT", 10, minimum=1),
        )
