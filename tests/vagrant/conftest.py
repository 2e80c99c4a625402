"""Fixtures for the tests on the Vagrant VMs (vagrant/vlab, make vagrant-lab).

These tests run inside the lab's network namespace (`make test-vagrant` runs
them through `vagrant/vlab exec`, which sets HALAB_VAGRANT=1): the VMs'
addresses, the topology's network and Vagrant's management network, exist
only there. tests/support/vagrant.py says how they reach the VMs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.model import TOPO
from tests.support.probes import Probes
from tests.support.run import REPO
from tests.support.vagrant import INVENTORY, inventory_hosts, on_node

# Emulated nodes answer slowly: generous HTTP timeouts.
PROBES = Probes(on_node, http_timeout=10.0)


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
