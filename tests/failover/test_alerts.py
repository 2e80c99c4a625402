"""The alerts a person watches, timed on the lab: from the cause to firing, from the recovery
to cleared (Prometheus' own view, /api/v1/alerts), and the receiver that shows them (each
alert a JSON line in the journal of halab-alert-log on the monitoring node).

Printed figures, not timed asserts: the rules are written to fire within 15 s and clear
within 15 s (roles/monitoring/files/halab.rules.yml, whose promtool tests pin the timings
scrape by scrape); here each one must fire and clear at all, and the note of its row says
how long it took. While an instance is stressed its own /api/health answers 503: the 5xx
alert must stay silent through the whole stress (the health signal is not a client error).
Client-visible 5xx, the API's 503s while every Redis node is stopped under load, must fire it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.model import MONITORING_GROUP, REDIS_GROUP, TOPO, first
from tests.support.wait import wait_until

from .scenario import PROBES, figure_row, keep, load

pytestmark = pytest.mark.usefixtures("healthy")

MON = first(MONITORING_GROUP)
PROMETHEUS = f"http://{MON.address}:{TOPO.services.port('prometheus')}"
SICK = str(TOPO.instances[0].id)
UNIT = f"todo-api@{SICK}"
# Bounds that only stop a hung test: the rules' own goal is 15 s.
FIRE_WITHIN = 60.0
POLL = 0.25


Alert = dict[str, str]  # an alert's labels


def firing() -> list[Alert]:
    """The labels of every firing alert, as Prometheus has them."""
    alerts = httpx.get(f"{PROMETHEUS}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [dict(a["labels"]) for a in alerts if a["state"] == "firing"]


def about(name: str, **labels: str) -> Callable[[list[Alert]], bool]:
    """Is an alert `name` with these labels among them?"""
    return lambda alerts: any(a["alertname"] == name and labels.items() <= a.items() for a in alerts)


UNHEALTHY = about("TodoApiInstanceUnhealthy", todo_api_instance=SICK)
MEMORY_HIGH = about("TodoApiMemoryHigh", todo_api_instance=SICK)
TARGET_DOWN = about("TargetDown", job="todo_api", todo_api_instance=SICK)
ANY_5XX = about("TodoApi5xxRatioHigh")
REDIS_DOWN = about("RedisDown")
REDIS_NODES = [n.name for n in TOPO.group(REDIS_GROUP)]


class Watch:
    """Polls the firing alerts, noting any 5xx alert it ever sees (it must never fire here)."""

    def __init__(self) -> None:
        self.false_5xx: list[list[Alert]] = []

    def poll(self) -> list[Alert]:
        now = firing()
        if ANY_5XX(now):
            self.false_5xx.append(now)
        return now

    def seconds_until(self, what: str, check: Callable[[list[Alert]], bool], since: float) -> float:
        """Seconds from `since` (time.monotonic()) until check() holds."""
        while not check(self.poll()):
            assert time.monotonic() - since < FIRE_WITHIN, f"{what}: not within {FIRE_WITHIN:.0f} s: {firing()}"
            time.sleep(POLL)
        return round(time.monotonic() - since, 2)


def test_alerts_fire_and_clear_and_reach_the_journal() -> None:
    since = PROBES.on_node(MON.name, "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    watch = Watch()
    before = firing()
    assert not (UNHEALTHY(before) or MEMORY_HIGH(before) or TARGET_DOWN(before)), before

    # -- memory over the threshold: unhealthy and memory high ------------------------------
    PROBES.on_instance(SICK, f"todo-apictl --instance {SICK} stress")
    t_cause = time.monotonic()
    unhealthy = watch.seconds_until("unhealthy fires", UNHEALTHY, t_cause)
    memory = watch.seconds_until("memory high fires", MEMORY_HIGH, t_cause)
    # the stress stands a while: its /api/health answers 503 all along, no 5xx alert may fire
    while time.monotonic() - t_cause < 20:
        watch.poll()
        time.sleep(1)
    PROBES.on_instance(SICK, f"todo-apictl --instance {SICK} clear")
    t_clear = time.monotonic()
    unhealthy_gone = watch.seconds_until("unhealthy clears", lambda f: not UNHEALTHY(f), t_clear)
    memory_gone = watch.seconds_until("memory high clears", lambda f: not MEMORY_HIGH(f), t_clear)
    assert not watch.false_5xx, f"TodoApi5xxRatioHigh fired from the stressed instance's health 503s: {watch.false_5xx[:2]}"

    # -- a target down: the instance's unit stopped ----------------------------------------
    PROBES.on_instance(SICK, f"systemctl stop {UNIT}")
    t_stop = time.monotonic()
    try:
        down = watch.seconds_until("target down fires", TARGET_DOWN, t_stop)
    finally:
        PROBES.on_instance(SICK, f"systemctl start {UNIT}")
    PROBES.all_healthy(timeout=60)  # ready again: the recovery the clearing is timed from
    up_again = watch.seconds_until("target down clears", lambda f: not TARGET_DOWN(f), time.monotonic())

    # -- what a person sees: the receiver's journal on the monitoring node ------------------
    journal = PROBES.on_node(MON.name, f"journalctl -u halab-alert-log --since '{since}' --no-pager -o cat").stdout
    for seen in ("firing: TodoApiInstanceUnhealthy", "resolved: TodoApiInstanceUnhealthy", "firing: TargetDown"):
        assert f'"msg":"{seen}"' in journal, f"{seen!r} not in halab-alert-log's journal:\n{journal[-2000:]}"
    note = (
        f"fired after (s): TodoApiInstanceUnhealthy {unhealthy}, TodoApiMemoryHigh {memory} (from the stress), "
        f"TargetDown {down} (from the unit's stop); cleared after (s): {unhealthy_gone}, {memory_gone} (from clear), "
        f"{up_again} (from ready); TodoApi5xxRatioHigh silent through 20 s of health 503s"
    )
    keep(figure_row("alerts: fire and clear", 3, note))


def test_client_5xx_and_redis_down_fire_and_clear() -> None:
    """Every Redis node stopped under load: clients get the API's 503 on /api/todos (a client
    route), so TodoApi5xxRatioHigh fires, with RedisDown; Redis started again, both clear."""
    before = firing()
    assert not (ANY_5XX(before) or REDIS_DOWN(before)), before
    watch = Watch()
    loads = load(total=6000, rate=20.0, max_seconds=2 * FIRE_WITHIN + 30)
    try:
        time.sleep(3)
        for node in REDIS_NODES:
            PROBES.on_node(node, "systemctl stop redis-server")
        t_cause = time.monotonic()
        loads.mark("fault")
        try:
            redis_down = watch.seconds_until("redis down fires", REDIS_DOWN, t_cause)
            client_5xx = watch.seconds_until("5xx ratio fires", ANY_5XX, t_cause)
        finally:
            for node in REDIS_NODES:
                PROBES.on_node(node, "systemctl start redis-server")
        t_back = time.monotonic()  # started (Type=notify: ready); the load goes on
        redis_gone = watch.seconds_until("redis down clears", lambda f: not REDIS_DOWN(f), t_back)
        client_5xx_gone = watch.seconds_until("5xx ratio clears", lambda f: not ANY_5XX(f), t_back)
    finally:
        loads.stop()
    # the instances' health and rotation: the `healthy` fixture waits for them on the way out
    wait_until("a Redis replica linked again", lambda: any(PROBES.replica_linked(n) for n in REDIS_NODES), timeout=60)
    # The 5xx alert's cause is the first 5xx a client got: a request meeting the outage keeps
    # looking for the primary for the API's failover wait before it is refused.
    naive = loads.naive
    first_5xx = min(o.answered for o in naive.outcomes if o.status >= 500) - naive.marks["fault"]
    note = (
        f"fired after (s): RedisDown {redis_down} (from stopping every Redis node under load), "
        f"TodoApi5xxRatioHigh {round(client_5xx - first_5xx, 2)} (from the first client 5xx, "
        f"{first_5xx:.2f} s after the stop); cleared after (s): {redis_gone}, {client_5xx_gone} (from Redis started)"
    )
    keep(figure_row("alerts: client 5xx, Redis down", 2, note))
