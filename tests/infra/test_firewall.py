"""The firewall: each port is reachable from the groups that need it, and from nothing else."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from testinfra.host import Host

from tests.support.model import (
    API_GROUP,
    LOADBALANCER_GROUP,
    MONITORING_GROUP,
    REDIS_GROUP,
    SENTINEL_GROUP,
    TOPO,
    instances_on,
)
from tests.support.net import tcp_open

# Every group but the API's: an API node starts no connection the matrix checks.
testinfra_hosts = [f"ansible://{g}" for g in (LOADBALANCER_GROUP, REDIS_GROUP, MONITORING_GROUP)]

Addr = Callable[[str], str]
Group = Callable[[str], list[str]]


def ports(target: str, name: str) -> list[int]:
    """The port `name` (topology.yml services.ports) on a host; the API's is each of its instances'."""
    if name == "todo_api":
        found = [i.port for i in instances_on(target)]
        assert found, f"{target} runs no API instance in topology.yml"
        return found
    return [TOPO.services.port(name)]


def reach(host: Host, ip: str, port: int) -> bool:
    return bool(host.run(f"timeout 3 bash -c 'echo > /dev/tcp/{ip}/{port}'").rc == 0)


# The lab host (the controller, where ansible and the tests run), as a source.
CONTROLLER = "controller"

# (source: a group or the controller, destination group, port name, should connect)
MATRIX = [
    (LOADBALANCER_GROUP, REDIS_GROUP, "redis", False),
    (LOADBALANCER_GROUP, API_GROUP, "todo_api", True),
    (LOADBALANCER_GROUP, REDIS_GROUP, "redis_exporter", False),
    (REDIS_GROUP, API_GROUP, "todo_api", False),
    (REDIS_GROUP, LOADBALANCER_GROUP, "nginx_exporter", False),
    (REDIS_GROUP, MONITORING_GROUP, "prometheus", False),
    (LOADBALANCER_GROUP, MONITORING_GROUP, "prometheus", True),  # the page's fixed query behind /status/requests
    (MONITORING_GROUP, API_GROUP, "todo_api", True),
    (MONITORING_GROUP, REDIS_GROUP, "redis_exporter", True),
    # mon runs a Sentinel, which watches the data nodes: only a Sentinel's node gets through
    (MONITORING_GROUP, REDIS_GROUP, "redis", bool(TOPO.group(SENTINEL_GROUP))),
    (REDIS_GROUP, REDIS_GROUP, "redis", True),  # replication
    (LOADBALANCER_GROUP, SENTINEL_GROUP, "redis_sentinel", False),
    (REDIS_GROUP, SENTINEL_GROUP, "redis_sentinel", True),  # the Sentinels talk to each other
    (LOADBALANCER_GROUP, SENTINEL_GROUP, "redis_sentinel_exporter", False),
    (MONITORING_GROUP, SENTINEL_GROUP, "redis_sentinel_exporter", True),
    (CONTROLLER, SENTINEL_GROUP, "redis_sentinel", False),
    (MONITORING_GROUP, LOADBALANCER_GROUP, "nginx_exporter", True),
    (LOADBALANCER_GROUP, API_GROUP, "node_exporter", False),
    (MONITORING_GROUP, API_GROUP, "node_exporter", True),
    (CONTROLLER, REDIS_GROUP, "redis", False),
    (CONTROLLER, API_GROUP, "todo_api", False),
    (CONTROLLER, API_GROUP, "node_exporter", False),
    (CONTROLLER, REDIS_GROUP, "redis_exporter", False),
    (CONTROLLER, LOADBALANCER_GROUP, "nginx_exporter", False),
    (CONTROLLER, LOADBALANCER_GROUP, "http", True),
    (CONTROLLER, MONITORING_GROUP, "prometheus", True),
    (CONTROLLER, MONITORING_GROUP, "alertmanager", True),
    (LOADBALANCER_GROUP, MONITORING_GROUP, "alertmanager", True),  # the page's active alerts
    (REDIS_GROUP, MONITORING_GROUP, "alertmanager", False),
    (MONITORING_GROUP, LOADBALANCER_GROUP, "mtail", True),  # the access logs as metrics
    (REDIS_GROUP, LOADBALANCER_GROUP, "mtail", False),
    (CONTROLLER, LOADBALANCER_GROUP, "mtail", False),
]
BETWEEN_GROUPS = [row for row in MATRIX if row[0] != CONTROLLER]
FROM_THE_LAB_HOST = [row[1:] for row in MATRIX if row[0] == CONTROLLER]


@pytest.mark.parametrize(("src", "dst", "port", "ok"), BETWEEN_GROUPS)
def test_between_groups(host: Host, group: Group, addr: Addr, src: str, dst: str, port: str, ok: bool) -> None:
    me = host.ansible.get_variables()["inventory_hostname"]
    if me not in group(src):
        pytest.skip(f"{me} is not in {src}")
    # A node's traffic to itself never meets the firewall (a placement may put two groups on one node).
    for target in (t for t in group(dst) if t != me):
        for number in ports(target, port):
            assert reach(host, addr(target), number) is ok, f"{me} -> {target}:{number} ({port})"


@pytest.mark.parametrize(("dst", "port", "ok"), FROM_THE_LAB_HOST)
def test_from_the_lab_host(group: Group, addr: Addr, dst: str, port: str, ok: bool) -> None:
    for target in group(dst):
        for number in ports(target, port):
            assert tcp_open(addr(target), number) is ok, f"controller -> {target}:{number} ({port})"
