"""testinfra on the running lab. Hosts and addresses come from the Ansible inventory,
ports and group names from the system model (tests/support/model.py).

Run alone:  .venv/bin/pytest tests/infra --ansible-inventory=inventory/lab/hosts.yml
(each module names its hosts with ``testinfra_hosts``; ``--hosts`` is not needed.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from testinfra.utils.ansible_runner import AnsibleRunner

from tests.support.model import LOADBALANCER_GROUP, TOPO
from tests.support.net import http_url
from tests.support.run import REPO

os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
# testinfra calls ansible-inventory/ansible by name: use the ones next to this interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
DEFAULT_INVENTORY = REPO / "inventory" / "lab" / "hosts.yml"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "disruptive: stops services on the lab and starts them again")
    config.addinivalue_line("markers", "idempotence: runs playbooks/site.yml again (slow)")
    config.addinivalue_line("markers", "edge_load: needs upstreams faster than the edge's per-client rate (not on emulated VMs)")
    if not config.getoption("ansible_inventory", None):
        config.option.ansible_inventory = str(DEFAULT_INVENTORY)


@pytest.fixture(scope="session")
def inventory(request: pytest.FixtureRequest) -> AnsibleRunner:
    return AnsibleRunner(request.config.getoption("ansible_inventory"))


@pytest.fixture(scope="session")
def addr(inventory: AnsibleRunner) -> Callable[[str], str]:
    """Private address of an inventory host (halab_private_address, else ansible_host)."""

    def _addr(name: str) -> str:
        v = inventory.get_variables(name)
        return str(v.get("halab_private_address") or v["ansible_host"])

    return _addr


@pytest.fixture(scope="session")
def group(inventory: AnsibleRunner) -> Callable[[str], list[str]]:
    def _group(name: str) -> list[str]:
        return sorted(inventory.get_hosts(name))

    return _group


@pytest.fixture(scope="session")
def lb_url(group: Callable[[str], list[str]], addr: Callable[[str], str]) -> str:
    return http_url(addr(group(LOADBALANCER_GROUP)[0]), TOPO.services.port("http"))
