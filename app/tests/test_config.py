from __future__ import annotations

import pytest

from todo_api.config import ConfigError, Settings, parse_management


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [("127.0.0.1:9001", "127.0.0.1", 9001), ("[::1]:9001", "::1", 9001),
     ("localhost:9002", "127.0.0.1", 9002), ("127.0.0.5:1", "127.0.0.5", 1)],
)
def test_management_loopback_tcp_accepted(value: str, host: str, port: int) -> None:
    m = parse_management(value)
    assert (m.host, m.port, m.uds) == (host, port, None)


@pytest.mark.parametrize(
    "value", ["0.0.0.0:9001", "10.0.0.5:9001", "[::]:9001", "192.168.1.1:80", "example.org:9001"]
)
def test_management_non_loopback_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="TODO_API_MANAGEMENT"):
        parse_management(value)


def test_management_unix_and_default() -> None:
    assert parse_management("unix:/run/todo-api-1/manage.sock").uds == "/run/todo-api-1/manage.sock"
    with pytest.raises(ConfigError):
        parse_management("unix:relative.sock")
    s = Settings.from_env({"TODO_API_INSTANCE": "2"})
    assert s.management.uds == "/run/todo-api-2/manage.sock"
    assert (s.host, s.port, s.memory_limit_mb, s.unhealthy_percent) == ("127.0.0.1", 8000, 512, 80)
    assert s.idempotency_ttl == 86400
    assert (s.stress_target_mb, s.stress_chunk_mb) == (400, 50)


def test_instance_required_and_ints_checked() -> None:
    with pytest.raises(ConfigError, match="TODO_API_INSTANCE"):
        Settings.from_env({})
    with pytest.raises(ConfigError, match="TODO_API_PORT"):
        Settings.from_env({"TODO_API_INSTANCE": "1", "TODO_API_PORT": "x"})
    with pytest.raises(ConfigError, match="UNHEALTHY_PERCENT"):
        Settings.from_env({"TODO_API_INSTANCE": "1", "TODO_API_UNHEALTHY_PERCENT": "150"})
