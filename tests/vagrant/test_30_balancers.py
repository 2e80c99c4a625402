"""The load balancer pair on real VMs: the holder cut off its private network, under a light load.

The nspawn lab runs every balancer scenario (tests/failover/test_balancers.py); here
the same keepalived configuration meets a real NIC on a libvirt network: the holder's
private interface is taken down from the inside (its management NIC keeps SSH up), the
peer takes the address and announces it by gratuitous ARP, the careful client sees no
failure, and nothing acknowledged is lost or stored twice. When the link is back the
old holder stands by and the address stays where it is.
"""

from __future__ import annotations

import time

import pytest

from tests.failover.loadgen import LoadRun, NaiveRun
from tests.failover.scenario import assert_kept
from tests.support.balancers import AddressWatch, Balancers, peer_of
from tests.support.model import PUBLIC_URL, TOPO
from tests.support.probes import assert_unharmed
from tests.support.vagrant import on_node
from tests.support.wait import wait_until

from .conftest import PROBES
from .test_20_failover import LIGHT, NAIVE_LIGHT

pytestmark = pytest.mark.usefixtures("healthy")

BALANCE = Balancers(on_node)


def private_interface(node: str) -> str:
    """The NIC that carries the node's address from the model (not Vagrant's management NIC)."""
    out = on_node(node, f"ip -o -4 addr show to {TOPO.node(node).address}").stdout.split()
    assert len(out) > 1, f"{node} has no interface with {TOPO.node(node).address}"
    return out[1]


def test_holder_cut_off_its_network_light() -> None:
    old = BALANCE.holder()
    peer = peer_of(old)
    nic = private_interface(old)
    watch = AddressWatch(timeout=1.0, every=0.05).start()
    # 400 requests at 10/s: 40 s, around a fault of about 10 s.
    careful = LoadRun(PUBLIC_URL, **(LIGHT | {"total": 400})).start()
    runs = (careful, NaiveRun(PUBLIC_URL, **(NAIVE_LIGHT | {"total": 400})).start())
    time.sleep(3)
    t_fault = time.monotonic()
    try:
        on_node(old, f"ip link set dev {nic} down")
        wait_until(f"{peer} to answer on the public address", lambda: watch.takeover(t_fault, old) is not None, timeout=60)
        time.sleep(5)
    finally:
        on_node(old, f"ip link set dev {nic} up")
    BALANCE.wait_standby(old, timeout=120)
    time.sleep(3)
    watch.stop()
    for run in runs:
        run.stop()
    rows = PROBES.settle_all(runs, "vagrant: lb holder cut off", instance=None)
    takeover = watch.takeover(t_fault, old)
    for row in rows:
        print(f"\n{row['scenario']}: takeover {takeover} s ({old} -> {peer}); {row}")
    assert BALANCE.holder() == peer, f"the address went back to {old}"
    careful_row, naive = rows
    assert_unharmed(careful_row, careful)
    assert_kept(naive)
    assert naive["failures"] <= NaiveRun.CONNECTIONS, naive["failed_by"]
