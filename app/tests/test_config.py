from __future__ import annotations

import re
from pathlib import Path

import pytest

from todo_api.config import MANAGEMENT_DEFAULT, ConfigError, Settings, parse_management


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


APP = Path(__file__).resolve().parents[1]
ENV_TEMPLATE = APP.parent / "roles/todo_api/templates/instance.env.j2"


def _readme_env_rows() -> dict[str, str]:
    rows = re.findall(r"^\| `(TODO_API_\w+)` \| ([^|]+) \|", (APP / "README.md").read_text(), re.M)
    return {name: default.strip() for name, default in rows}


def test_readme_env_table_is_settings() -> None:
    """The README's table lists exactly the variables Settings reads, with their defaults."""
    rows = _readme_env_rows()
    env = Settings.env_vars()
    assert list(rows) == list(env)
    for name, f in env.items():
        if name == "TODO_API_MANAGEMENT":
            assert rows[name] == f"`{MANAGEMENT_DEFAULT.format(instance='${INSTANCE}')}`"
        elif f.default in ("", None, ()):
            assert rows[name] in ("(required)", "(none)"), name
        else:
            assert rows[name] == f"`{f.default}`", name


@pytest.mark.skipif(not ENV_TEMPLATE.exists(), reason="not in the halab tree")
def test_role_sets_only_known_variables() -> None:
    names = re.findall(r"^(TODO_API_\w+)=", ENV_TEMPLATE.read_text(), re.M)
    assert names and set(names) <= set(Settings.env_vars())


def test_every_variable_is_read() -> None:
    env = {"TODO_API_INSTANCE": "9"}
    for name, f in Settings.env_vars().items():
        if f.type == "int":
            env.setdefault(name, "17")
        elif name != "TODO_API_MANAGEMENT":
            env.setdefault(name, f"v-{name}")
    env["TODO_API_MANAGEMENT"] = "127.0.0.1:9009"
    env["TODO_API_REDIS_SENTINELS"] = "10.0.0.1:26379, s2:26380"
    env["TODO_API_REDIS_TIMEOUT_MS"] = "18"  # the replica wait (17) must stay below it
    s = Settings.from_env(env)
    for name, f in Settings.env_vars().items():
        value = getattr(s, f.name)
        if name == "TODO_API_MANAGEMENT":
            assert (value.host, value.port) == ("127.0.0.1", 9009)
        elif name == "TODO_API_REDIS_SENTINELS":
            assert value == (("10.0.0.1", 26379), ("s2", 26380))
        else:
            assert str(value) == env[name], name
    assert Settings.from_env({"TODO_API_INSTANCE": " 3 ", "TODO_API_HOST": "  "}).host == (
        "127.0.0.1"
    )
    with pytest.raises(ConfigError, match="TODO_API_INSTANCE"):
        Settings.from_env({"TODO_API_INSTANCE": "  "})
    with pytest.raises(ConfigError, match="TODO_API_REDIS_SENTINELS: expected HOST:PORT"):
        Settings.from_env({"TODO_API_INSTANCE": "1", "TODO_API_REDIS_SENTINELS": "a:1,b"})
    with pytest.raises(ConfigError, match="REPLICA_WAIT_MS must be below"):
        Settings.from_env({"TODO_API_INSTANCE": "1", "TODO_API_REDIS_REPLICA_WAIT_MS": "5000"})
    with pytest.raises(ConfigError, match="TODO_API_GRACEFUL_TIMEOUT: must be >= 1"):
        Settings.from_env({"TODO_API_INSTANCE": "1", "TODO_API_GRACEFUL_TIMEOUT": "0"})
