"""What the page's charts read: the load balancers' access logs counted by mtail, the recording
rules of roles/monitoring/files/dashboard.rules.yml, and the fixed read-only paths NGINX serves
them on (<status>/series/<chart>, <status>/alerts). Checked through the public address, as the
page reads them."""

from __future__ import annotations

import re
from collections import Counter
from functools import partial
from typing import Any

import httpx
import pytest
import testinfra

from tests.support.model import LOADBALANCER_GROUP, PUBLIC_URL, TOPO
from tests.support.wait import wait_until

CHARTS = ("memory", "traffic", "redis", "balancers", "states")
# The only labels a chart's series may carry: what it is, and the one it is grouped by.
LABELS = {"__name__", "series", "todo_api_instance", "node", "alertname"}
INSTANCES = {str(i.id) for i in TOPO.instances}
SERVED = re.compile(r'^halab_lb_api_served_total\{[^}]*upstream="([^"]+)"[^}]*\} (\S+)$', re.M)


def chart(name: str, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{PUBLIC_URL}/status/series/{name}", params=params, timeout=5)
    assert response.status_code == 200, (name, response.status_code, response.text[:300])
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "success" and body["data"]["resultType"] == "matrix", body
    return list(body["data"]["result"])


def latest(result: list[dict[str, Any]], **labels: str) -> dict[str, float]:
    """The last value of every series with these labels, by the label that tells them apart."""
    found = {}
    for s in result:
        if labels.items() <= s["metric"].items():
            key = s["metric"].get("todo_api_instance") or s["metric"].get("node") or s["metric"].get("alertname") or ""
            found[key] = float(s["values"][-1][1])
    return found


@pytest.mark.parametrize("name", CHARTS)
def test_each_chart_is_one_fixed_query_with_only_its_own_labels(name: str) -> None:
    # the browser's own arguments are replaced: asking for `up` still gets the chart
    result = wait_until(f"series/{name} has data", lambda: chart(name, query="up"), timeout=30)
    for series in result:
        assert set(series["metric"]) <= LABELS, series["metric"]
        assert series["metric"]["__name__"] == f"halab:dashboard_{name}"
        assert "series" in series["metric"]


def test_the_charts_say_what_the_lab_is() -> None:
    memory = chart("memory")
    for kind in ("used", "threshold", "limit"):
        assert set(latest(memory, series=kind)) == INSTANCES, kind
    limit, threshold = latest(memory, series="limit"), latest(memory, series="threshold")
    for instance in INSTANCES:
        assert limit[instance] == 512 * 1024 * 1024, "MemoryMax=512M, as the kernel reports it"
        assert threshold[instance] == pytest.approx(0.8 * limit[instance])
    primary = latest(chart("redis"), series="primary")
    assert sorted(primary.values()) == [0.0, 1.0], f"one primary, one replica: {primary}"
    holders = latest(chart("balancers"), series="holder")
    assert set(holders) == {n.name for n in TOPO.group(LOADBALANCER_GROUP)}
    assert sum(holders.values()) == 1.0, f"one load balancer holds the public address: {holders}"
    assert latest(chart("states"), series="state") == dict.fromkeys(INSTANCES, 0.0), "every instance OK"


def served_by(node: str, inventory: str) -> Counter[str]:
    """halab_lb_api_served_total on a load balancer (its mtail, on its private address), by upstream."""
    host = testinfra.get_host(f"ansible://{node}", ansible_inventory=inventory)
    address = TOPO.node(node).address
    text = host.check_output(f"curl -sf http://{address}:{TOPO.services.port('mtail')}/metrics")
    return Counter({upstream: int(float(value)) for upstream, value in SERVED.findall(text)})


def test_the_access_log_counts_who_answered(request: pytest.FixtureRequest) -> None:
    """Each /api/ answer through the public address is counted, by the load balancer that sent
    it, for the instance that gave it (X-Instance)."""
    inventory = request.config.getoption("ansible_inventory")
    before = {n.name: served_by(n.name, inventory) for n in TOPO.group(LOADBALANCER_GROUP)}
    answered: Counter[tuple[str, str]] = Counter()
    with httpx.Client(base_url=PUBLIC_URL, timeout=5) as client:
        for _ in range(20):
            response = client.get("/api/todos", params={"limit": 1})
            assert response.status_code == 200
            answered[(response.headers["x-balancer"], response.headers["x-instance"])] += 1

    def counted(balancer: str, upstream: str, n: int) -> bool:
        return served_by(balancer, inventory)[upstream] - before[balancer][upstream] >= n

    for (balancer, instance), n in answered.items():
        upstream = f"{TOPO.instance(instance).address}:{TOPO.instance(instance).port}"
        wait_until(
            f"{balancer} counts {n} answers of instance {instance}",
            partial(counted, balancer, upstream, n),
            timeout=10,
        )


def test_the_active_alerts_path_lists_alertmanagers_alerts() -> None:
    response = httpx.get(f"{PUBLIC_URL}/status/alerts", timeout=5)
    assert response.status_code == 200, response.text[:300]
    alerts = response.json()
    assert isinstance(alerts, list), alerts
    for alert in alerts:
        assert {"labels", "annotations", "startsAt", "status"} <= set(alert), alert
    assert httpx.post(f"{PUBLIC_URL}/status/alerts", timeout=5).status_code == 403
