"""The Vagrant VMs (vagrant/vlab, make vagrant-lab): how the tests reach them.

These tests run inside the lab's network namespace (`make test-vagrant` runs
them through `vagrant/vlab exec`, which sets HALAB_VAGRANT=1): the VMs'
addresses, 192.168.56.0/24 and Vagrant's management network, exist only there.
They reach the nodes the way operators do, over SSH with Vagrant's generated
inventory (the management plane), and the load balancer over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab import topology

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / ".vagrant/provisioners/ansible/inventory/vagrant_ansible_inventory"
TOPO = topology.load()
LB_URL = f"http://{TOPO.node('lb').address}"
INSTANCE_NODE = {str(i): n.name for n in TOPO.nodes for i in n.host_vars.get("todo_api_instances", [])}
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


def on_instance(instance: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return on_node(INSTANCE_NODE[instance], command, check=check, timeout=timeout)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 90, every: float = 1.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except (httpx.HTTPError, subprocess.SubprocessError, AssertionError, ValueError, KeyError):
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def instance_status(instance: str) -> dict[str, Any]:
    out = on_instance(instance, f"todo-apictl --instance {instance} status", check=False).stdout
    return dict(json.loads(out)) if out.strip().startswith("{") else {}


def instance_healthy(instance: str) -> bool:
    return bool(instance_status(instance).get("health", {}).get("status") == "OK")


def serves_through_lb(instance: str, tries: int = 10) -> bool:
    with httpx.Client(base_url=LB_URL, timeout=10) as client:
        return any(client.get("/api/todos").headers.get("x-instance") == instance for _ in range(tries))


def all_todos() -> list[dict[str, Any]]:
    for _ in range(60):
        try:
            response = httpx.get(f"{LB_URL}/api/todos", timeout=10)
            if response.status_code == 200:
                return list(response.json())
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError("could not list the todos through the load balancer")


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
    """A scenario starts, and leaves, both instances healthy and in rotation."""
    for instance in INSTANCE_NODE:
        wait_until(f"instance {instance} healthy", partial(instance_healthy, instance), timeout=180)
    yield
    for instance in INSTANCE_NODE:
        if instance_status(instance).get("stress", {}).get("allocatedMB"):
            on_instance(instance, f"todo-apictl --instance {instance} clear", check=False)
        wait_until(f"instance {instance} healthy again", partial(instance_healthy, instance), timeout=180)
        wait_until(f"instance {instance} back in rotation", partial(serves_through_lb, instance), timeout=90)
