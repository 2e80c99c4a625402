"""Replicated Redis under Sentinel: one primary, its replica in sync, three Sentinels that
agree, and users that may do only their part (roles/redis, roles/redis_sentinel).

Read on the nodes themselves: ROLE and INFO replication with the operators' user, SENTINEL
commands with the Sentinel's password (from its own config, root only).
"""

from __future__ import annotations

import pytest
import yaml
from testinfra.host import Host

from tests.support.model import REDIS_GROUP, SENTINEL_GROUP, TOPO
from tests.support.net import LOOPBACK
from tests.support.probes import Probes
from tests.support.run import REPO

testinfra_hosts = [f"ansible://{REDIS_GROUP}", f"ansible://{SENTINEL_GROUP}"]

pytestmark = pytest.mark.skipif(len(TOPO.group(REDIS_GROUP)) < 2, reason="one Redis node: nothing replicates")

REDIS_PORT = TOPO.services.port("redis")
SENTINEL_PORT = TOPO.services.port("redis_sentinel")
SENTINEL_DEFAULTS = yaml.safe_load((REPO / "roles/redis_sentinel/defaults/main.yml").read_text())
MASTER = SENTINEL_DEFAULTS["redis_sentinel_master_name"]
ADMIN = f'REDISCLI_AUTH="$(cat /etc/redis/admin.password)" redis-cli --user admin --no-auth-warning -h {LOOPBACK} -p {REDIS_PORT}'
SENTINEL = Probes.sentinel_cli_command("", host=LOOPBACK)


def groups_of(host: Host) -> list[str]:
    return list(host.ansible.get_variables()["group_names"])


def only_in(host: Host, group: str) -> None:
    if group not in groups_of(host):
        pytest.skip(f"not in {group}")


def fields(text: str) -> dict[str, str]:
    """redis-cli's INFO (key:value lines) or flat key/value reply (alternate lines)."""
    if ":" in text:
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
    lines = text.splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=False))


def test_each_data_node_is_a_primary_or_its_replica_in_sync(host: Host) -> None:
    only_in(host, REDIS_GROUP)
    info = fields(host.check_output(f"{ADMIN} INFO replication"))
    if info["role"] == "master":
        assert int(info["connected_slaves"]) == 1, info
        assert "state=online" in info["slave0"], info
    else:
        assert info["role"] == "slave" and info["master_link_status"] == "up", info
        primaries = {n.address for n in TOPO.group(REDIS_GROUP)} - {host.ansible.get_variables()["halab_address"]}
        assert info["master_host"] in primaries, info
    # Replicated, the replica's acknowledgment carries the durability promise: fsync each second.
    assert host.check_output(f"{ADMIN} CONFIG GET appendfsync").split() == ["appendfsync", "everysec"]
    assert host.file("/etc/redis/redis.conf").contains("^# halab: bootstrap$")


def test_the_sentinels_agree_and_see_everyone(host: Host) -> None:
    only_in(host, SENTINEL_GROUP)
    for unit in ("redis-sentinel", "prometheus-redis-sentinel-exporter"):
        assert host.service(unit).is_running and host.service(unit).is_enabled, unit
    master = fields(host.check_output(f"{SENTINEL} SENTINEL MASTER {MASTER}"))
    assert master["flags"] == "master", master
    assert master["ip"] in {n.address for n in TOPO.group(REDIS_GROUP)}
    assert int(master["num-other-sentinels"]) == len(TOPO.group(SENTINEL_GROUP)) - 1, master
    assert int(master["num-slaves"]) == len(TOPO.group(REDIS_GROUP)) - 1, master
    # the role's timings (or the inventory's, as the Vagrantfile sets on emulated CPUs), kept
    # in line at runtime (SENTINEL SET) whatever the bootstrap file said
    inventory = host.ansible.get_variables()
    expected = {
        setting: inventory.get(variable, SENTINEL_DEFAULTS[variable])
        for setting, variable in (
            ("quorum", "redis_sentinel_quorum"),
            ("down-after-milliseconds", "redis_sentinel_down_after_ms"),
            ("failover-timeout", "redis_sentinel_failover_timeout_ms"),
            ("parallel-syncs", "redis_sentinel_parallel_syncs"),
        )
    }
    assert {k: master[k] for k in expected} == {k: str(v) for k, v in expected.items()}, master
    assert host.check_output(f"{SENTINEL} SENTINEL CKQUORUM {MASTER}").startswith("OK")
    assert host.file("/etc/redis/sentinel.conf").mode == 0o640


def test_a_sentinel_answers_no_one_without_its_password(host: Host) -> None:
    only_in(host, SENTINEL_GROUP)
    out = host.run(f"redis-cli -h {LOOPBACK} -p {SENTINEL_PORT} SENTINEL MASTERS")
    assert "NOAUTH" in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("user", "password_of", "forbidden"),
    [
        # the replica replicates (PSYNC, REPLCONF) and reads nothing
        ("replica", "masterauth", ["GET todos:seq", "KEYS *", "CONFIG SET maxmemory 1", "FLUSHALL"]),
        # the Sentinels reconfigure (REPLICAOF, CONFIG REWRITE) and read no key
        ("sentinel", "auth-pass", ["GET todos:seq", "CONFIG SET maxmemory 1", "FLUSHALL", "ACL LIST"]),
    ],
)
def test_the_replication_and_sentinel_users_get_only_their_part(
    host: Host, user: str, password_of: str, forbidden: list[str]
) -> None:
    only_in(host, REDIS_GROUP)
    conf = "/etc/redis/redis.conf" if password_of == "masterauth" else "/etc/redis/sentinel.conf"
    if not host.file(conf).exists:
        pytest.skip(f"no {conf} here")
    get_password = f"awk '$1 == \"{password_of}\" || $2 == \"{password_of}\" {{print $NF}}' {conf} | head -1 | tr -d '\"'"
    login = f'REDISCLI_AUTH="$({get_password})" redis-cli --no-auth-warning --user {user} -h {LOOPBACK} -p {REDIS_PORT}'
    assert host.check_output(f"{login} PING") == "PONG"
    for command in forbidden:
        out = host.run(f"{login} {command}")
        assert "NOPERM" in out.stdout + out.stderr, (user, command, out.stdout + out.stderr)
