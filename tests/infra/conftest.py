"""testinfra on the running lab. Hosts and addresses come from the Ansible inventory.

Run alone:  .venv/bin/pytest tests/infra --ansible-inventory=inventory/lab/hosts.yml
(each module names its hosts with ``testinfra_hosts``; ``--hosts`` is not needed.)
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
# testinfra calls ansible-inventory/ansible by name: use the ones next to this interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
DEFAULT_INVENTORY = ROOT / "inventory" / "lab" / "hosts.yml"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "disruptive: stops services on the lab and starts them again")
    config.addinivalue_line("markers", "idempotence: runs playbooks/site.yml again (slow)")
    if not config.getoption("ansible_inventory", None):
        config.option.ansible_inventory = str(DEFAULT_INVENTORY)


@pytest.fixture(scope="session")
def inventory(request: pytest.FixtureRequest):
    from testinfra.utils.ansible_runner import AnsibleRunner

    return AnsibleRunner(request.config.getoption("ansible_inventory"))


@pytest.fixture(scope="session")
def addr(inventory):
    """Private address of an inventory host (halab_private_address, else ansible_host)."""

    def _addr(name: str) -> str:
        v = inventory.get_variables(name)
        return str(v.get("halab_private_address") or v["ansible_host"])

    return _addr


@pytest.fixture(scope="session")
def group(inventory):
    return lambda name: sorted(inventory.get_hosts(name))


@pytest.fixture(scope="session")
def lb_url(group, addr) -> str:
    return f"http://{addr(group('loadbalancer')[0])}"


def http(url: str, method: str = "GET", timeout: float = 5.0, **kw):
    """(status, headers, body) without raising on HTTP errors."""
    req = urllib.request.Request(url, method=method, **kw)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """From the lab host (the controller)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(pred, timeout: float = 60.0, step: float = 1.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def json_body(body: bytes):
    return json.loads(body.decode())
