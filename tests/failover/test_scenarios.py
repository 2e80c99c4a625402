"""Failover under load: every fault an operator meets, counted request by request.

Each scenario runs a bounded load (2,000 requests at 100/s, 1 POST in 5)
through the load balancer while it breaks something, then asserts zero
client-visible failures and that every acknowledged todo exists exactly once.
Run one alone: `pytest tests/failover -k seed`.
"""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from tests.support.ansible import playbook
from tests.support.lab import labctl, on_node
from tests.support.model import LOADBALANCER_GROUP, PUBLIC_URL, REDIS_GROUP, TOPO, first
from tests.support.wait import wait_until

from .scenario import PROBES, assert_clean, finish, load

pytestmark = pytest.mark.usefixtures("healthy")

on_instance = PROBES.on_instance
instance_status = PROBES.instance_status
instance_healthy = PROBES.instance_healthy
serves_through_lb = PROBES.serves_through_lb

# The instance the scenarios make sick, the one that serves meanwhile, and their nodes.
SICK, OTHER = (str(i.id) for i in TOPO.instances[:2])
SICK_NODE = TOPO.instance(SICK).host
UNIT = f"todo-api@{SICK}"
REDIS_NODE = first(REDIS_GROUP).name
LB_NODE = first(LOADBALANCER_GROUP).name

SEED_JQ = f"""for i in 1 2 3 4 5; do curl -s {PUBLIC_URL}/api/health | jq -r '.instance + " - " + .status'; done"""


def test_seed_scenario_stress_and_recover_through_the_management_plane() -> None:
    run = load(total=3500, max_seconds=80)
    time.sleep(3)
    run.mark("fault")
    playbook("stress.yml", instance=SICK)
    wait_until(f"instance {SICK} unhealthy", lambda: not instance_healthy(SICK), timeout=30)
    # The seed's own check, as written in it: five health checks through NGINX.
    seen = subprocess.run(["bash", "-c", SEED_JQ], capture_output=True, text=True, check=True).stdout.split("\n")
    assert [line for line in seen if line] == [f"{OTHER} - OK"] * 5, seen
    time.sleep(3)
    run.mark("recover")
    playbook("recover.yml", instance=SICK)
    wait_until(f"instance {SICK} healthy", lambda: instance_healthy(SICK), timeout=30)
    wait_until(f"instance {SICK} in rotation", lambda: serves_through_lb(SICK), timeout=30)
    # Again, recovered the other way: systemctl restart on the node.
    playbook("stress.yml", instance=SICK)
    wait_until(f"instance {SICK} unhealthy again", lambda: not instance_healthy(SICK), timeout=30)
    on_instance(SICK, f"systemctl restart {UNIT}")
    wait_until(f"instance {SICK} healthy after restart", lambda: instance_healthy(SICK), timeout=60)
    row = finish(run, "seed: stress + recover", sick=SICK)
    assert_clean(row, run)
    assert row["readmitted_after_s"] is not None, f"instance {SICK} never came back into rotation"


def test_past_the_limit_the_kernel_oom_kills_and_systemd_restarts() -> None:
    restarts = int(on_instance(SICK, f"systemctl show -p NRestarts --value {UNIT}").stdout.strip())
    since = on_instance(SICK, "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    run = load()
    time.sleep(3)
    run.mark("fault")
    # 700 MB against MemoryMax=512M: the allocation cannot finish.
    on_instance(SICK, f"todo-apictl --instance {SICK} --timeout 30 stress --mb 700", check=False)
    wait_until(
        f"a restart of {UNIT}",
        lambda: int(on_instance(SICK, f"systemctl show -p NRestarts --value {UNIT}").stdout.strip()) > restarts,
        timeout=60,
    )
    run.mark("recover")
    wait_until(f"instance {SICK} healthy after the OOM kill", lambda: instance_healthy(SICK), timeout=60)
    journal = on_instance(SICK, f"journalctl -u {UNIT} --since '{since}' --no-pager -o cat").stdout
    row = finish(run, "past MemoryMax: OOM kill", sick=SICK)
    assert_clean(row, run)
    # cgroup v2 nodes: systemd says oom-kill; cgroup v1 nodes (nspawn): the
    # kernel's SIGKILL inside the unit's memory cgroup.
    assert "oom-kill" in journal or "status=9/KILL" in journal, journal[-2000:]
    assert on_instance(SICK, f"systemctl show -p MemoryMax --value {UNIT}").stdout.strip() == "536870912"


@pytest.mark.parametrize(
    ("name", "fault", "recover"),
    [
        ("kill -9 main process", f"kill -9 $(systemctl show -p MainPID --value {UNIT})", None),
        ("systemctl stop, start", f"systemctl stop {UNIT}", f"systemctl start {UNIT}"),
        ("systemctl restart", f"systemctl restart {UNIT}", None),
    ],
)
def test_process_faults(name: str, fault: str, recover: str | None) -> None:
    run = load()
    time.sleep(3)
    run.mark("fault")
    on_instance(SICK, fault)
    if recover:
        time.sleep(4)
        run.mark("recover")
        on_instance(SICK, recover)
    else:
        run.mark("recover")
    wait_until(f"instance {SICK} healthy", lambda: instance_healthy(SICK), timeout=60)
    row = finish(run, name, sick=SICK)
    assert_clean(row, run)


@pytest.mark.parametrize(
    ("name", "fault", "recover"),
    [
        ("node loss (plug pulled)", ("stop", SICK_NODE, "--now"), ("start", SICK_NODE)),
        ("network partition", ("partition", SICK_NODE), ("heal", SICK_NODE)),
    ],
)
def test_node_faults(name: str, fault: tuple[str, ...], recover: tuple[str, ...]) -> None:
    run = load(max_seconds=90)
    time.sleep(3)
    run.mark("fault")
    try:
        labctl(*fault)
        time.sleep(5)
    finally:
        run.mark("recover")
        labctl(*recover)
    wait_until(f"instance {SICK} healthy", lambda: instance_healthy(SICK), timeout=120)
    row = finish(run, name, sick=SICK)
    assert_clean(row, run)


def test_redis_restart_tells_writers_to_retry_and_loses_nothing() -> None:
    run = load()
    time.sleep(3)
    run.mark("fault")
    on_node(REDIS_NODE, "systemctl stop redis-server")
    time.sleep(3)
    run.mark("recover")
    on_node(REDIS_NODE, "systemctl start redis-server")
    row = finish(run, "redis restart", sick=None)
    refusals = [(o.method, r) for o in run.outcomes for r in o.refusals]
    assert refusals, "no request met the outage: the scenario tested nothing"
    # Writers are told to come back: JSON 503 + Retry-After while Redis is away.
    # A POST whose first attempt reserved its Idempotency-Key just before the
    # outage may meet that reservation on a retry (Redis keeps it across the
    # restart until its lease ends): JSON 409 + Retry-After, the same advice.
    told_to_retry = {(503, "GET"), (503, "POST"), (409, "POST")}
    assert all((r.status, method) in told_to_retry and r.json_body and r.retry_after for method, r in refusals), {
        (method, r.status, r.json_body, r.retry_after) for method, r in refusals
    }
    assert_clean(row, run)


def test_rolling_restart_under_load() -> None:
    run = load(max_seconds=120, total=4000)
    time.sleep(3)
    run.mark("fault")
    playbook("rolling-restart.yml")
    run.mark("recover")
    run.stop()
    row = finish(run, "rolling restart", sick=None)
    row_requests = row["requests"]
    assert row_requests >= 300, "the load stopped before the rolling restart"
    assert row["failures"] == 0 and row["lost"] == 0 and row["duplicated"] == 0, row


def test_nginx_reload_under_load() -> None:
    run = load()
    time.sleep(3)
    run.mark("fault")
    for _ in range(3):
        on_node(LB_NODE, "systemctl reload nginx")
        time.sleep(2)
    row = finish(run, "nginx reload x3", sick=None, recover=None)
    assert_clean(row, run)


def test_both_unhealthy_gives_a_quick_json_503_and_resumes_by_itself() -> None:
    run = load(total=3000, max_seconds=80)
    time.sleep(3)
    run.mark("fault")
    for instance in (SICK, OTHER):
        on_instance(instance, f"todo-apictl --instance {instance} stress")
    wait_until("both unhealthy", lambda: not instance_healthy(SICK) and not instance_healthy(OTHER), timeout=30)
    probes = []
    with httpx.Client(base_url=PUBLIC_URL, timeout=10) as client:
        for _ in range(5):
            started = time.monotonic()
            response = client.post("/api/todos", json={"texto": "while both are sick"})
            probes.append((response.status_code, time.monotonic() - started, response))
    print("\nboth sick, direct probes (status, seconds): " + ", ".join(f"{s} {t:.3f}" for s, t, _ in probes))
    for status, _, response in probes:
        assert status == 503
        assert response.headers["content-type"].startswith("application/json")
        assert "error" in response.json()
        assert response.headers.get("retry-after")
    run.mark("recover")
    on_instance(OTHER, f"todo-apictl --instance {OTHER} clear")
    wait_until(
        "service resumed by itself", lambda: httpx.get(f"{PUBLIC_URL}/api/todos", timeout=5).status_code == 200, timeout=30
    )
    run.mark("resumed")
    row = finish(run, "both unhealthy", sick=None)
    # With no healthy instance the right answer is a refusal: a request whose
    # retries all fell inside the outage may fail, but only with the clear
    # JSON 503 + Retry-After, never a hang or a transport error, and none
    # after service resumed. Nothing acknowledged is lost or doubled.
    resumed = run.marks["resumed"]
    for outcome in run.failures():
        last = outcome.refusals[-1] if outcome.refusals else None
        assert outcome.status == 503 and last and last.json_body and last.retry_after, outcome
        assert outcome.started < resumed, f"request {outcome.index} failed after service resumed"
    assert row["lost"] == 0 and row["duplicated"] == 0, row
    assert all(o.ok for o in run.outcomes if o.started > resumed + 1.0)
    assert instance_status(SICK).get("stress", {}).get("allocatedMB", 0) > 0  # still sick; the fixture clears it
