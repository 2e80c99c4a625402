"""Failover of the load balancer pair under load (issue 14): the node holding the public
address breaks, keepalived (VRRP) moves the address to its peer.

Each scenario runs the suite's two bounded loads (careful and naive client) against the
public address while an `AddressWatch` asks the address on a fresh connection every
20 ms. The row's note gives the takeover time: from the fault to the first answer from
the peer. When the broken node is back, the address stays where it is (equal VRRP
priorities: no preemption), so there is no second interruption: the new holder records
no VRRP transition after its takeover, and the watch sees no other balancer answer.

The careful client must see no failure. The naive one (no retry, 16 keep-alive
connections) loses what was on its connections to the old holder at an unplanned fault
(plug pulled, partition): every connection it had open there dies once (the new holder
answers a reset), so its failures are at most its connections per move of the address;
nothing acknowledged is lost or stored twice, and the note counts the requests that were in
flight at the fault. A clean stop (nginx stopped, reboot, rolling restart) runs keepalived's
hand-over first (roles/keepalived, design 9): the old holder closes each connection after
its answer, and the client's next one waits for its SYN to be sent again (max ~1 s), so the
table's naive rows for those show 0 failed as a rule; the bound stays the same, since a
connection the reload closes just as the client sends on it still fails once.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest

from tests.support.ansible import playbook
from tests.support.balancers import AddressWatch, Balancers, peer_of
from tests.support.lab import labctl, on_node, plug_in, pull_plug
from tests.support.wait import wait_until

from .loadgen import LoadRun
from .scenario import (
    LOAD,
    assert_clean,
    assert_kept,
    assert_unclear_at_most_one_per_connection,
    figure_row,
    finish,
    keep,
    load,
)

pytestmark = pytest.mark.usefixtures("healthy")

BALANCE = Balancers(on_node)
holder = BALANCE.holder
wait_standby = BALANCE.wait_standby
# How long a fault lasts before it is undone: long enough to be seen, bounded.
FAULT_SECONDS = 5.0
# How many times the plug-pull takeover is timed without load (the median is the figure).
TAKEOVER_TRIES = 5


def in_flight(run: LoadRun, mark: str) -> int:
    """Requests of `run` sent before `mark` and not yet answered at it."""
    t = run.marks[mark]
    return sum(1 for o in run.outcomes if o.started <= t < o.started + o.latency)


def balancer_fault(
    name: str,
    fault: Callable[[str], None],
    recover: Callable[[str], None] | None,
) -> None:
    """One scenario: load on, break the holder, (undo), wait for it to stand by, check."""
    old = holder()
    peer = peer_of(old)
    watch = AddressWatch().start()
    run = load(max_seconds=90)
    time.sleep(3)
    run.mark("fault")
    t_fault = time.monotonic()
    try:
        fault(old)
        wait_until(f"{peer} to answer on the public address", lambda: watch.takeover(t_fault, old) is not None, timeout=30)
        wait_until(f"{peer} to record itself VRRP master", lambda: BALANCE.vrrp_state(peer) == "MASTER", timeout=30)
        took_over = BALANCE.vrrp_record(peer)
        time.sleep(FAULT_SECONDS)
    finally:
        run.mark("recover")
        if recover:
            recover(old)
    wait_standby(old)
    t_back = time.monotonic()
    time.sleep(3)  # what the watch sees once the old holder is back
    watch.stop()
    takeover = watch.takeover(t_fault, old)
    flight = {one.client: in_flight(one, "fault") for one in run}

    def note(one: LoadRun) -> str:
        return (
            f"takeover {takeover} s ({old} -> {peer}); in flight at the fault {flight[one.client]}; "
            f"silent after {old} was back {watch.longest_silence(t_back)} s"
        )

    careful, naive = finish(run, name, sick=None, note=note)
    assert takeover is not None, f"{peer} never answered on the public address"
    assert holder() == peer, f"the address went back to {old}: a second interruption"
    # No second interruption: the new holder stayed VRRP master from its takeover to the end
    # (its notify hook recorded no transition since: the same record, `since` included), and
    # once the old holder was back only the new one answered. The watch's longest silence
    # is a printed figure: on this 2-CPU host a busy moment (the old holder booting) can
    # make every probe miss its 0.25 s timeout while nothing moved.
    at_the_end = BALANCE.vrrp_record(peer)
    assert at_the_end == took_over, (took_over, at_the_end)
    settled = watch.after(t_back)
    assert settled and not [s for s in settled if s.balancer not in (None, peer)], {s.balancer for s in settled}
    assert_clean(careful, run.careful)
    assert naive["requests"] >= run.naive.total * 0.95, f"the naive load stopped early: {naive['requests']}"
    assert_kept(naive)
    # Each naive connection open to the old holder dies at most once (the address moves once):
    # at most one unanswered request per connection. A clear refusal (an instance's JSON 503
    # with Retry-After, "storage unavailable": Redis held by a slow fsync past the API's Redis
    # timeout, see roles/redis/README.md) is counted in the row's note, not bounded here.
    assert_unclear_at_most_one_per_connection(run.naive)


def test_holder_plug_pulled() -> None:
    balancer_fault("lb holder: plug pulled", pull_plug, plug_in)


def stop_nginx(node: str) -> None:
    on_node(node, "systemctl stop nginx")


def start_nginx(node: str) -> None:
    on_node(node, "systemctl start nginx")


def partition(node: str) -> None:
    labctl("partition", node)


def heal(node: str) -> None:
    labctl("heal", node)


def reboot(node: str) -> None:
    labctl("reboot", node)


def test_nginx_stopped_on_the_holder() -> None:
    balancer_fault("lb holder: nginx stopped", stop_nginx, start_nginx)


def test_holder_partitioned_and_healed() -> None:
    balancer_fault("lb holder: partitioned, healed", partition, heal)


def test_holder_rebooted() -> None:
    balancer_fault("lb holder: rebooted", reboot, None)


def test_rolling_restart_of_the_balancers() -> None:
    """playbooks/rolling-restart.yml --tags loadbalancer: the standby first, the holder last,
    so the address moves once, to a node whose NGINX was just restarted."""
    old = holder()
    watch = AddressWatch().start()
    run = load(max_seconds=120, total=4000)
    time.sleep(3)
    run.mark("fault")
    t_fault = time.monotonic()
    playbook("rolling-restart.yml", "--tags", "loadbalancer")
    run.mark("recover")
    run.stop_at(LOAD["total"])
    watch.stop()
    takeover = watch.takeover(t_fault, old)
    unanswered = [s for s in watch.after(t_fault) if s.balancer is None]

    def note(one: LoadRun) -> str:
        return f"address moved {old} -> {peer_of(old)} after {takeover} s; watch unanswered {len(unanswered)}"

    careful, naive = finish(run, "lb rolling restart", sick=None, note=note)
    assert holder() == peer_of(old)
    for row in (careful, naive):
        assert row["requests"] >= LOAD["total"], f"{row['scenario']}: the load stopped early"
        assert_kept(row)
    assert careful["failures"] == 0, careful
    assert_unclear_at_most_one_per_connection(run.naive)


def test_takeover_time_median_of_plug_pulls() -> None:
    """The figure the issue asks for: the holder's plug pulled TAKEOVER_TRIES times, no
    load; printed (a benchmark figure, not a timed assertion)."""
    figures: list[float] = []
    for _ in range(TAKEOVER_TRIES):
        old = holder()
        watch = AddressWatch(max_seconds=60).start()
        time.sleep(0.5)
        t_fault = time.monotonic()
        pull_plug(old)
        wait_until("a takeover", lambda: watch.takeover(t_fault, old) is not None, timeout=30)  # noqa: B023
        watch.stop()
        figures.append(watch.takeover(t_fault, old) or float("nan"))
        plug_in(old)
        wait_standby(old)
    line = (
        f"plug pulled x{TAKEOVER_TRIES}: takeover median {statistics.median(figures):.3f} s "
        f"(each: {', '.join(f'{f:.3f}' for f in figures)})"
    )
    keep(figure_row("lb takeover, plug pulled, no load", TAKEOVER_TRIES, line))
    assert len(figures) == TAKEOVER_TRIES
