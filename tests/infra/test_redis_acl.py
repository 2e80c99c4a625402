"""Least privilege in Redis: the API's own credentials can do what the API does and nothing else.

The credentials are read where the API reads them (an instance's environment file on an api
node); the commands run with redis-cli on the redis node, as a client logging in with them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import pytest
import testinfra
from testinfra.host import Host

from tests.support.model import API_GROUP, REDIS_GROUP, TOPO
from tests.support.net import LOOPBACK

testinfra_hosts = [f"ansible://{REDIS_GROUP}"]

REDIS_PORT = TOPO.services.port("redis")

# What the issue found the old all-powerful password could do, and more of the same kind.
FORBIDDEN = [
    "CONFIG SET requirepass x",
    "CONFIG SET maxmemory 1",
    "CONFIG SET appendonly no",
    "CONFIG GET *",
    "ACL SETUSER intruder on >x +@all",
    "ACL LIST",
    "FLUSHALL",
    "FLUSHDB",
    "SCRIPT FLUSH",
    "DEBUG SLEEP 0",
    "SHUTDOWN NOSAVE",
    "KEYS *",
    "SET outside:the:todos 1",
    "GET outside:the:todos",
    "EVAL \"return 1\" 0",
]


@pytest.fixture(autouse=True)
def only_on_redis_nodes(host: Host) -> None:
    """The Vagrant route runs every module on every host (--hosts=ansible://all)."""
    if REDIS_GROUP not in host.ansible.get_variables()["group_names"]:
        pytest.skip("not a redis node")


def env_file(host: Host, path: str) -> dict[str, str]:
    lines = host.file(path).content_string.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


@dataclass(frozen=True)
class Secret:
    """A password that never shows in a test report."""

    value: str = field(repr=False)


@pytest.fixture(scope="module")
def api_credentials(request: pytest.FixtureRequest) -> tuple[str, Secret]:
    """(user, password) of the first instance, from its environment file on its node."""
    instance = TOPO.instances[0]
    node = testinfra.get_host(
        f"ansible://{instance.host}", ansible_inventory=request.config.getoption("ansible_inventory")
    )
    assert API_GROUP in node.ansible.get_variables()["group_names"]
    env = env_file(node, f"/etc/todo-api/{instance.id}.env")
    return env["TODO_API_REDIS_USERNAME"], Secret(env["TODO_API_REDIS_PASSWORD"])


def redis_as(host: Host, user: str, password: Secret, command: str) -> str:
    out = host.run(
        f"REDISCLI_AUTH={shlex.quote(password.value)} timeout 10 redis-cli --no-auth-warning --user {shlex.quote(user)}"
        f" -h {LOOPBACK} -p {REDIS_PORT} {shlex.join(shlex.split(command))}"
    )
    return str(out.stdout) + str(out.stderr)


@pytest.mark.parametrize("command", FORBIDDEN)
def test_the_api_user_is_refused(host: Host, api_credentials: tuple[str, Secret], command: str) -> None:
    answer = redis_as(host, *api_credentials, command)
    assert "NOPERM" in answer or "DEBUG command not allowed" in answer, answer


def test_the_api_user_can_do_its_job(host: Host, api_credentials: tuple[str, Secret]) -> None:
    assert redis_as(host, *api_credentials, "PING").strip() == "PONG"
    assert redis_as(host, *api_credentials, "ZCARD todos:list").strip().isdigit()


def test_the_default_user_is_off(host: Host) -> None:
    answer = host.run(f"redis-cli -h {LOOPBACK} -p {REDIS_PORT} GET todos:seq")
    assert "NOAUTH" in answer.stdout + answer.stderr


def test_passwords_are_stored_hashed_and_private(host: Host) -> None:
    acl = host.file("/etc/redis/users.acl")
    assert acl.mode == 0o640 and acl.user == "redis"
    users = [line.split()[1] for line in acl.content_string.splitlines() if line.startswith("user ")]
    assert "default" in users and "user default off" in acl.content_string
    for line in acl.content_string.splitlines():
        if " on " in line:
            assert " #" in line and ">" not in line, "a password in clear text in the ACL file"
    admin = host.file("/etc/redis/admin.password")
    assert admin.mode == 0o600 and admin.user == "root"


def test_the_exporter_has_its_own_read_only_user(host: Host) -> None:
    env = host.file("/etc/default/prometheus-redis-exporter")
    assert env.mode == 0o600
    creds = env_file(host, "/etc/default/prometheus-redis-exporter")
    user, password = creds["REDIS_USER"], Secret(creds["REDIS_PASSWORD"])
    assert redis_as(host, user, password, "INFO server").startswith("# Server")
    for command in ("CONFIG SET maxmemory 1", "GET todos:seq", "FLUSHALL"):
        assert "NOPERM" in redis_as(host, user, password, command), command
