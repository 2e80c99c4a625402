"""Settings: every TODO_API_* environment variable, its default and its check, declared once."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any


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


# Each setting is declared once, as a dataclass field: its default, and in the field's metadata
# the environment variable it is read from and how (``from_env``). A field without metadata is
# not configurable from the environment.
_ENV = "env"


def _parse_str(name: str, raw: str) -> str | None:
    return raw.strip() or None  # empty means "use the default"


def _parse_secret(name: str, raw: str) -> str | None:
    return raw or None  # taken as given (a password may have spaces)


def _int_parser(minimum: int, maximum: int | None) -> Callable[[str, str], int | None]:
    def parse(name: str, raw: str) -> int | None:
        raw = raw.strip()
        if not raw:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name}: must be <= {maximum}, got {value}")
        return value

    return parse


def _parse_endpoints(name: str, raw: str) -> tuple[tuple[str, int], ...] | None:
    """``host:port,host:port`` (Sentinels); empty means none."""
    out: list[tuple[str, int]] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, sep, port_s = item.rpartition(":")
        if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) <= 65535:
            raise ConfigError(f"{name}: expected HOST:PORT[,HOST:PORT...], got {item!r}")
        out.append((host, int(port_s)))
    return tuple(out) or None


def _parse_management(name: str, raw: str) -> ManagementBind | None:
    return parse_management(raw) if raw.strip() else None


def _var(name: str, default: Any, parse: Callable[[str, str], Any] = _parse_str) -> Any:
    """A setting read from environment variable ``name``; ``default`` when unset or empty."""
    return field(default=default, metadata={_ENV: (name, parse)})


def _int_var(name: str, default: int, minimum: int = 1, maximum: int | None = None) -> Any:
    return _var(name, default, _int_parser(minimum, maximum))


# The management listener's default depends on the instance (filled in by __post_init__);
# todo-apictl finds it there too.
MANAGEMENT_SOCKET = "/run/todo-api-{instance}/manage.sock"
MANAGEMENT_DEFAULT = "unix:" + MANAGEMENT_SOCKET


def management_socket(instance: str | int) -> str:
    """The default management socket of an instance (the unit's RuntimeDirectory)."""
    return MANAGEMENT_SOCKET.format(instance=instance)
_UNSET = ManagementBind()


@dataclass(frozen=True)
class Settings:
    instance: str = _var("TODO_API_INSTANCE", "")
    host: str = _var("TODO_API_HOST", "127.0.0.1")
    port: int = _int_var("TODO_API_PORT", 8000, minimum=0)
    management: ManagementBind = _var(  # noqa: RUF009 (_var returns a dataclasses.field)
        "TODO_API_MANAGEMENT", _UNSET, _parse_management
    )
    redis_url: str = _var("TODO_API_REDIS_URL", "redis://127.0.0.1:6379/0")
    # ACL user the app logs in as; None = legacy AUTH with the password alone (user `default`)
    redis_username: str | None = _var("TODO_API_REDIS_USERNAME", None)
    redis_password: str | None = _var("TODO_API_REDIS_PASSWORD", None, _parse_secret)
    # per Redis call and per wait for a pooled connection; past it, 503 storage unavailable
    # (app README: why 5 s)
    redis_timeout_ms: int = _int_var("TODO_API_REDIS_TIMEOUT_MS", 5000, minimum=1)
    # per connection attempt; 0: redis_timeout_ms. A node whose plug was pulled leaves no
    # refusal, only silence: while the Sentinels replace it, every try to reach it costs
    # this long, so a short one finds the new primary sooner (app README)
    redis_connect_timeout_ms: int = _int_var("TODO_API_REDIS_CONNECT_TIMEOUT_MS", 0, minimum=0)
    # Sentinels to ask for the primary of redis_sentinel_master; none = redis_url is the primary
    redis_sentinels: tuple[tuple[str, int], ...] = _var(
        "TODO_API_REDIS_SENTINELS", (), _parse_endpoints
    )
    redis_sentinel_master: str = _var("TODO_API_REDIS_SENTINEL_MASTER", "halab")
    redis_sentinel_username: str | None = _var("TODO_API_REDIS_SENTINEL_USERNAME", None)
    redis_sentinel_password: str | None = _var(
        "TODO_API_REDIS_SENTINEL_PASSWORD", None, _parse_secret
    )
    # after each write, wait up to this long for a replica's acknowledgment (WAIT 1 ms);
    # 0: never wait (no replica). Without one in time the write stands on the primary's
    # AOF (if the Sentinels confirm it is still the primary) and health says DEGRADED
    # (app README: the durability promise)
    redis_replica_wait_ms: int = _int_var("TODO_API_REDIS_REPLICA_WAIT_MS", 0, minimum=0)
    # how long a request keeps looking for the primary (through the Sentinels) before
    # answering 503 storage unavailable; 0: not at all
    redis_failover_wait_ms: int = _int_var("TODO_API_REDIS_FAILOVER_WAIT_MS", 0, minimum=0)
    memory_limit_mb: int = _int_var("TODO_API_MEMORY_LIMIT_MB", 512)
    unhealthy_percent: int = _int_var("TODO_API_UNHEALTHY_PERCENT", 80, maximum=100)
    cgroup_root: str = _var("TODO_API_CGROUP_ROOT", "/sys/fs/cgroup")
    proc_self_cgroup: str = _var("TODO_API_PROC_SELF_CGROUP", "/proc/self/cgroup")
    idempotency_ttl: int = _int_var("TODO_API_IDEMPOTENCY_TTL", 86400)
    # a keyless POST is keyed by the load balancer's X-Request-ID: long enough for NGINX's
    # retry on the other instance, short so these records cost little memory
    lb_key_ttl: int = _int_var("TODO_API_LB_KEY_TTL", 120)
    stress_target_mb: int = _int_var("TODO_API_STRESS_TARGET_MB", 400)
    stress_chunk_mb: int = _int_var("TODO_API_STRESS_CHUNK_MB", 50)
    graceful_timeout: int = _int_var("TODO_API_GRACEFUL_TIMEOUT", 10)
    # NGINX must agree on these two: the lab sets both from topology.yml's services.limits
    max_body_bytes: int = _int_var("TODO_API_MAX_BODY_BYTES", 16 * 1024)
    retry_after_seconds: int = _int_var("TODO_API_RETRY_AFTER", 5)

    def __post_init__(self) -> None:
        if not self.instance:
            raise ConfigError("TODO_API_INSTANCE is required (e.g. TODO_API_INSTANCE=1)")
        if self.management == _UNSET:
            bind = parse_management(MANAGEMENT_DEFAULT.format(instance=self.instance))
            object.__setattr__(self, "management", bind)
        if self.redis_replica_wait_ms and self.redis_replica_wait_ms >= self.redis_timeout_ms:
            raise ConfigError(
                "TODO_API_REDIS_REPLICA_WAIT_MS must be below TODO_API_REDIS_TIMEOUT_MS "
                f"({self.redis_replica_wait_ms} >= {self.redis_timeout_ms}): the WAIT for a "
                "replica is one Redis call"
            )

    @classmethod
    def env_vars(cls) -> dict[str, Field[Any]]:
        """Environment variable name -> the field it sets, in declaration order."""
        return {f.metadata[_ENV][0]: f for f in fields(cls) if _ENV in f.metadata}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, f in cls.env_vars().items():
            parse = f.metadata[_ENV][1]
            value = parse(name, e.get(name, ""))
            if value is not None:
                values[f.name] = value
        return cls(**values)
