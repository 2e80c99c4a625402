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

from tests.failover.scenario import assert_kept, assert_unclear_at_most_one_per_connection
from tests.support.balancers import BALANCERS, AddressWatch, Balancers, peer_of
from tests.support.model import TOPO
from tests.support.probes import assert_unharmed
from tests.support.vagrant import on_node
from tests.support.wait import wait_until

from .conftest import PROBES
from .test_20_failover import start_loads

# Not in make test-vagrant (make test-vagrant-vrrp): see the vrrp_fault marker in pyproject.toml.
pytestmark = [pytest.mark.usefixtures("healthy"), pytest.mark.vrrp_fault]

BALANCE = Balancers(on_node)


def private_interface(node: str) -> str:
    """The NIC that carries the node's address from the model (not Vagrant's management NIC)."""
    out = on_node(node, f"ip -o -4 addr show to {TOPO.node(node).address}").stdout.split()
    assert len(out) > 1, f"{node} has no interface with {TOPO.node(node).address}"
    return out[1]


# The cut lasts long enough for the old holder's upstream check to fail (fall 2 x interval 5 s
# on this platform, plus a connect timeout): it then comes back with the lower priority for
# rise x interval and yields at once, whatever order the first adverts arrive in.
CUT_AFTER_TAKEOVER_S = 20


def keepalived_journal(node: str) -> str:
    """The node's keepalived and notify-hook lines of the last minutes (for a failure message)."""
    cmd = "journalctl -u keepalived --since '-4min' --no-pager -o short-monotonic | tail -n 40"
    return on_node(node, cmd, check=False, timeout=60).stdout


def test_holder_cut_off_its_network_light() -> None:
    old = BALANCE.settled_holder()
    peer = peer_of(old)
    nic = private_interface(old)
    watch = AddressWatch(timeout=1.0, every=0.05).start()
    # 500 requests at 10/s: 50 s, around a fault of about 25 s.
    runs = careful, naive_run = start_loads(total=500)
    time.sleep(3)
    t_fault = time.monotonic()
    try:
        on_node(old, f"ip link set dev {nic} down")
        wait_until(f"{peer} to answer on the public address", lambda: watch.takeover(t_fault, old) is not None, timeout=60)
        time.sleep(CUT_AFTER_TAKEOVER_S)
    finally:
        on_node(old, f"ip link set dev {nic} up")
    t_heal = time.monotonic()
    BALANCE.wait_standby(old, timeout=120)
    time.sleep(5)
    watch.stop()
    for run in runs:
        run.stop()
    rows = PROBES.settle_all(runs, "vagrant: lb holder cut off", instance=None)
    takeover = watch.takeover(t_fault, old)
    for row in rows:
        print(f"\n{row['scenario']}: takeover {takeover} s ({old} -> {peer}); {row}")
    # Who answered on the address after the heal: only the new holder (no takeback).
    answered = sorted({s.balancer for s in watch.after(t_heal) if s.balancer})
    holder = BALANCE.settled_holder()
    if holder != peer or answered != [peer]:  # the journals are fetched only to explain a failure
        journals = "\n".join(f"--- {n}\n{keepalived_journal(n)}" for n in BALANCERS)
        raise AssertionError(f"after the heal: holder {holder}, answered {answered}\n{journals}")
    careful_row, naive = rows
    assert_unharmed(careful_row, careful)
    assert_kept(naive)
    # The naive client's failures other than a clear JSON 503 + Retry-After (an emulated
    # instance shedding load says so): at most one per connection it had open on the lost node.
    assert_unclear_at_most_one_per_connection(naive_run)
