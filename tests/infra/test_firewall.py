"""The firewall: each port is reachable from the groups that need it, and from nothing else."""

from __future__ import annotations

import pytest
from conftest import tcp_open

testinfra_hosts = ["ansible://lb", "ansible://data", "ansible://mon"]


def reach(host, ip: str, port: int) -> bool:
    return host.run(f"timeout 3 bash -c 'echo > /dev/tcp/{ip}/{port}'").rc == 0


# (source group, destination group, port, should connect)
MATRIX = [
    ("loadbalancer", "redis", 6379, False),
    ("loadbalancer", "api", 8000, True),
    ("loadbalancer", "redis", 9121, False),
    ("redis", "api", 8000, False),
    ("redis", "loadbalancer", 9113, False),
    ("redis", "monitoring", 9090, False),
    ("loadbalancer", "monitoring", 9090, True),  # the page's fixed query behind /status/requests
    ("monitoring", "api", 8000, True),
    ("monitoring", "redis", 9121, True),
    ("monitoring", "redis", 6379, False),
    ("monitoring", "loadbalancer", 9113, True),
    ("loadbalancer", "api", 9100, False),
    ("monitoring", "api", 9100, True),
]


@pytest.mark.parametrize(("src", "dst", "port", "ok"), MATRIX)
def test_between_groups(host, group, addr, src, dst, port, ok):
    me = host.ansible.get_variables()["inventory_hostname"]
    if me not in group(src):
        pytest.skip(f"{me} is not in {src}")
    for target in group(dst):
        assert reach(host, addr(target), port) is ok, f"{me} -> {target}:{port}"


@pytest.mark.parametrize(
    ("dst", "port", "ok"),
    [("redis", 6379, False), ("api", 8000, False), ("api", 9100, False), ("redis", 9121, False),
     ("loadbalancer", 9113, False), ("loadbalancer", 80, True), ("monitoring", 9090, True), ("monitoring", 9093, False)],
)
def test_from_the_lab_host(group, addr, dst, port, ok):
    for target in group(dst):
        assert tcp_open(addr(target), port) is ok, f"controller -> {target}:{port}"
