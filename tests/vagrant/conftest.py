"""The Vagrant VMs (vagrant/vlab, make vagrant-lab): how the tests reach them.

These tests run inside the lab's network namespace (`make test-vagrant` runs
them through `vagrant/vlab exec`, which sets HALAB_VAGRANT=1): the VMs'
addresses, 192.168.56.0/24 and Vagrant's management network, exist only there.
They reach the nodes the way operators do, over SSH with Vagrant's generated
inventory (the management plane), and the load balancer over HTTP.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.probes import TOPO, Probes

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / ".vagrant/provisioners/ansible/inventory/vagrant_ansible_inventory"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def inventory_hosts(path: Path = INVENTORY) -> dict[str, dict[str, str]]:
    """Host lines of Vagrant's INI inventory: name -> ansible_* variables."""
    hosts: dict[str, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        if "ansible_host=" not in line or line.lstrip().startswith(("#", ";", "[")):
            continue
        name, *pairs = shlex.split(line)
        hosts[name] = dict(p.split("=", 1) for p in pairs if "=" in p)
    return hosts


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP of an ansible-playbook run: host -> ok/changed/unreachable/failed."""
    keys = ("ok", "changed", "unreachable", "failed")
    return {m[0]: dict(zip(keys, map(int, m[1:]), strict=True)) for m in RECAP.findall(output)}


def ssh_command(host: dict[str, str], command: str) -> list[str]:
    return [
        "ssh", "-q", "-i", host["ansible_ssh_private_key_file"], "-p", host.get("ansible_port", "22"),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-o", "ControlMaster=auto", "-o", "ControlPath=/tmp/halab-vagrant-ssh-%C", "-o", "ControlPersist=120",
        "-o", "ConnectTimeout=10",
        f"{host.get('ansible_user', 'vagrant')}@{host['ansible_host']}", "sudo sh -c " + shlex.quote(command),
    ]  # fmt: skip


def on_node(node: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command as root on a VM, over SSH (the management plane)."""
    result = subprocess.run(
        ssh_command(inventory_hosts()[node], command), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        output = f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        raise AssertionError(f"{node}: {command!r} failed ({result.returncode}):\n{output}")
    return result


# Emulated nodes answer slowly: generous HTTP timeouts.
PROBES = Probes(on_node, http_timeout=10.0)
on_instance = PROBES.on_instance
instance_healthy = PROBES.instance_healthy
serves_through_lb = PROBES.serves_through_lb
all_todos = PROBES.all_todos
forget = PROBES.forget


@pytest.fixture(scope="session", autouse=True)
def vagrant_lab() -> None:
    """Only inside vlab's namespace, with Vagrant's inventory written."""
    if os.environ.get("HALAB_VAGRANT") != "1":
        pytest.skip("the Vagrant VMs are reached from their namespace: run `make test-vagrant`")
    if not INVENTORY.is_file():
        pytest.fail(f"no {INVENTORY.relative_to(REPO)}: run `make vagrant-lab` first")
    missing = {n.name for n in TOPO.nodes} - set(inventory_hosts())
    assert not missing, f"Vagrant's inventory lacks {sorted(missing)}"


@pytest.fixture
def healthy() -> Iterator[None]:
    yield from PROBES.both_healthy_around(timeout=180)
