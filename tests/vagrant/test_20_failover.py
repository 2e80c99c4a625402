"""The seed's failover and an OOM kill, on real VMs (cgroup v2), under a light load.

qemu without KVM is about five times slower than native, so the load is light
(10 requests/s, 1 POST in 5, for each of the two clients: the careful one and
the naive one, see tests/failover/loadgen.py) and the waits are generous; the
careful client must see no failure; the naive one may see clear JSON 503s and a
few requests with no answer (see finish()); for both, no todo lost or stored
twice. How long each step takes on an emulated VM varies with the host (from one
run to the next, isolation took 1.4 s or 15 s), so the load does not run for a
fixed count: it runs until the recovered instance has served it again, and stops
there, bounded by its ceiling (1200 requests, 120 s).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Unpack

import httpx
import pytest

from tests.failover.loadgen import LoadRun, LoadShape, NaiveRun
from tests.failover.scenario import assert_kept, assert_unclear_at_most_one_per_connection, naive_shape
from tests.support.model import PUBLIC_URL, TOPO
from tests.support.probes import assert_unharmed
from tests.support.wait import wait_until

from .conftest import PROBES

pytestmark = pytest.mark.usefixtures("healthy")

on_instance = PROBES.on_instance
instance_healthy = PROBES.instance_healthy
serves_through_lb = PROBES.serves_through_lb

# The instance the scenarios make sick, the one that serves meanwhile.
SICK, OTHER = (str(i.id) for i in TOPO.instances[:2])
UNIT = f"todo-api@{SICK}"

# request_timeout above NGINX's proxy_read_timeout (10 s): a request stuck on
# an instance that stopped answering is NGINX's to retry on the other node; a
# client giving up first would only send it back to the same stuck instance.
# 64 requests in flight at most (the default 16 is for the fast nspawn lab): here a
# request can take its whole 15 s while an instance is being isolated, and a client
# with all its slots held issues nothing new (the recovered instance then never met it).
LIGHT: LoadShape = {
    "total": 1200,
    "rate": 10.0,
    "max_seconds": 120.0,
    "retry_budget": 40.0,
    "request_timeout": 15.0,
    "concurrency": 64,
}
# How long an instance may take to be ready again after its restart: the VMs' TimeoutStartSec.
RESTART_S = 300.0
# How long the load may run on, once the instance is healthy, before it meets it again.
READMIT_S = 180.0


def start_loads(**overrides: Unpack[LoadShape]) -> tuple[LoadRun, LoadRun]:
    """The careful and the naive client, started together (LIGHT, with overrides)."""
    careful: LoadShape = LIGHT | overrides
    return LoadRun(PUBLIC_URL, **careful).start(), NaiveRun(PUBLIC_URL, **naive_shape(careful)).start()


def mark(runs: tuple[LoadRun, ...], name: str) -> None:
    for run in runs:
        run.mark(name)


def served_by_the_load_since_recovery(run: LoadRun, instance: str) -> bool:
    return any(t >= run.marks["recover"] for t in run.served_times(instance))


def finish(runs: tuple[LoadRun, LoadRun], name: str) -> dict[str, Any]:
    """Once the careful load has met the sick instance again, stop both and check
    what each saw; the careful client's row back (it has the isolation times)."""
    careful, _ = runs
    # Bounded, not timed: how long NGINX takes to send the recovered instance traffic again
    # is the row's readmitted_after_s. On a slow day of emulated VMs that was 61 s after an
    # OOM restart (CI, stop 25: its 60 s bound failed the test with nothing wrong).
    wait_until(
        f"the load served by instance {SICK} again",
        lambda: served_by_the_load_since_recovery(careful, SICK) or careful.finished(),
        timeout=READMIT_S,
    )
    for run in runs:
        run.stop()
    rows = PROBES.settle_all(runs, name, instance=SICK)
    for row in rows:
        print(f"\n{row['scenario']}: {row}")
        assert row["requests"] < LIGHT["total"], f"{row['scenario']}: the load reached its ceiling first"
    # The careful client: no failure at all. The naive one (no retry): nothing lost or
    # stored twice; its failures clear JSON 503s with Retry-After, but for at most one
    # per connection with no answer at all. On emulated VMs the surviving instance is ~5x
    # slower under the whole load, NGINX's passive checks can mark it failed too while
    # the sick one is out (OOM kill: 24 naive 503s in one run, 0 for the careful client),
    # which only a retry rides out; and while the sick instance is still being isolated
    # (15 s in one run) a request can outlast NGINX's read timeout on it and on the
    # retry, and the naive client's 30 s (one run: 15 of 374, 0 on its rerun). On the
    # nspawn lab the naive client must see no failure at all (tests/failover); isolating
    # and readmitting faster is issue 16's.
    careful_row, naive_row = rows
    assert_unharmed(careful_row, runs[0])
    assert_kept(naive_row)
    naive_failures = runs[1].failures()
    kinds = Counter((o.method, o.status, o.refusals[-1].error if o.refusals else o.error) for o in naive_failures)
    print(f"naive failures: {dict(kinds)}")
    assert_unclear_at_most_one_per_connection(runs[1])
    return careful_row


def test_seed_scenario_stress_and_recover_light() -> None:
    runs = start_loads()
    time.sleep(3)
    mark(runs, "fault")
    on_instance(SICK, f"todo-apictl --instance {SICK} stress")
    wait_until(f"instance {SICK} unhealthy", lambda: not instance_healthy(SICK), timeout=60)
    # The seed's own check: health through NGINX now only ever answers from the other instance.
    # Which one answers is the point, not how fast: an emulated VM under the load took over 10 s
    # once, and once answered DEGRADED (its Redis check timed out under the whole load).
    with httpx.Client(base_url=PUBLIC_URL, timeout=30) as client:
        seen = [client.get("/api/health").json() for _ in range(5)]
    assert [h["instance"] for h in seen] == [OTHER] * 5, seen
    assert all(h["status"] in ("OK", "DEGRADED") for h in seen), seen
    time.sleep(3)
    mark(runs, "recover")
    on_instance(SICK, f"todo-apictl --instance {SICK} clear")
    wait_until(f"instance {SICK} healthy", lambda: instance_healthy(SICK), timeout=60)
    wait_until(f"instance {SICK} back in rotation", lambda: serves_through_lb(SICK), timeout=60)
    row = finish(runs, "vagrant seed: stress + recover")
    assert row["readmitted_after_s"] is not None, f"instance {SICK} never came back into rotation"


def test_past_memorymax_the_kernel_oom_kills_and_systemd_restarts() -> None:
    def restarts() -> int:
        return int(on_instance(SICK, f"systemctl show -p NRestarts --value {UNIT}").stdout.strip())

    before = restarts()
    since = on_instance(SICK, "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    assert on_instance(SICK, f"systemctl show -p MemoryMax --value {UNIT}").stdout.strip() == "536870912"
    assert on_instance(SICK, "stat -fc %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs", "a real VM has cgroup v2"
    # Long enough to meet the instance again: its restart under this load took 150 s once
    # here (TimeoutStartSec is 300 on these VMs); finish() stops both once it served again.
    # Half the pace of the seed test: while the killed instance starts again (Python start-up
    # on an emulated core), its peer alone answered 20 requests/s with Redis timeouts (503s).
    rate = LIGHT["rate"] / 2
    runs = start_loads(rate=rate, total=int(rate * RESTART_S), max_seconds=RESTART_S + 30)
    time.sleep(3)
    mark(runs, "fault")
    # 700 MB against MemoryMax=512M: the kernel kills the unit before the call returns.
    on_instance(SICK, f"todo-apictl --instance {SICK} --timeout 60 stress --mb 700", check=False)
    wait_until(f"a restart of {UNIT}", lambda: restarts() > before, timeout=120)
    mark(runs, "recover")
    wait_until(f"instance {SICK} healthy after the OOM kill", lambda: instance_healthy(SICK), timeout=RESTART_S)
    journal = on_instance(SICK, f"journalctl -u {UNIT} --since '{since}' --no-pager -o cat").stdout
    row = finish(runs, "vagrant: past MemoryMax, OOM kill")
    assert "oom-kill" in journal, journal[-2000:]
    assert row["readmitted_after_s"] is not None, f"instance {SICK} never came back into rotation after its restart"
