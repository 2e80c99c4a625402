"""What a user and an operator see: balancing, what is public, the JSON 503, Prometheus."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
from testinfra.host import Host

from tests.support.model import API_GROUP, INSTANCE_NODE, MONITORING_GROUP, TOPO
from tests.support.net import http, http_url
from tests.support.wait import poll

testinfra_hosts = [f"ansible://{API_GROUP}"]

Addr = Callable[[str], str]
Group = Callable[[str], list[str]]
INSTANCES = set(INSTANCE_NODE)  # "1", "2": as X-Instance names them


def json_body(body: bytes) -> Any:
    return json.loads(body.decode())


def prometheus(group: Group, addr: Addr, path: str) -> str:
    return http_url(addr(group(MONITORING_GROUP)[0]), TOPO.services.port("prometheus"), path)


def test_requests_alternate_between_instances(lb_url: str) -> None:
    seen = [http(f"{lb_url}/api/health")[1]["X-Instance"] for _ in range(6)]
    assert set(seen) == INSTANCES
    assert all(a != b for a, b in pairwise(seen)), seen


@pytest.mark.parametrize("path", ["/metrics", "/api/stress", "/api/stress/clear", "/manage/status"])
def test_not_public(lb_url: str, path: str) -> None:
    for method in ("GET", "POST"):
        assert http(f"{lb_url}{path}", method=method)[0] == 404


def test_static_frontend(lb_url: str) -> None:
    status, _headers, body = http(f"{lb_url}/")
    assert status == 200 and b"halab" in body


def test_post_through_the_lb(lb_url: str) -> None:
    key = str(uuid.uuid4())
    kw: dict[str, Any] = {"data": json.dumps({"texto": "testinfra"}).encode(),
          "headers": {"Content-Type": "application/json", "Idempotency-Key": key}}
    first = http(f"{lb_url}/api/todos", method="POST", **kw)
    again = http(f"{lb_url}/api/todos", method="POST", **kw)
    assert first[0] == 201 and again[0] in (200, 201)
    assert json_body(first[2])["id"] == json_body(again[2])["id"]


def test_body_limit(lb_url: str) -> None:
    status = http(f"{lb_url}/api/todos", method="POST", data=b"x" * 20000,
                  headers={"Content-Type": "application/json"})[0]
    assert status == 413


def test_prometheus_targets_all_up(group: Group, addr: Addr) -> None:
    url = prometheus(group, addr, "/api/v1/targets")

    def all_up() -> bool:
        targets = json_body(http(url)[2])["data"]["activeTargets"]
        return len(targets) >= len(group("all")) + 5 and all(t["health"] == "up" for t in targets)

    assert poll(all_up, timeout=60, every=3), json_body(http(url)[2])


def test_alert_rules_loaded(group: Group, addr: Addr) -> None:
    url = prometheus(group, addr, "/api/v1/rules")
    names = {r["name"] for g in json_body(http(url)[2])["data"]["groups"] for r in g["rules"]}
    assert {"TargetDown", "TodoApiInstanceUnhealthy", "TodoApiMemoryHigh", "TodoApi5xxRatioHigh"} <= names


def test_prometheus_lifecycle_api_is_off(group: Group, addr: Addr) -> None:
    """Whoever reaches Prometheus must not be able to stop it (it reloads through systemd)."""
    for path in ("/-/quit", "/-/reload"):
        status, _, body = http(prometheus(group, addr, path), method="POST")
        assert status == 403 and b"Lifecycle API is not enabled" in body, (path, status, body[:200])
    assert http(prometheus(group, addr, "/-/healthy"))[0] == 200


@pytest.mark.disruptive
def test_json_503_when_no_instance(host: Host, lb_url: str, group: Group) -> None:
    """Stop every instance (this test runs once per api host: the last one checks)."""
    me = host.ansible.get_variables()["inventory_hostname"]
    api = group(API_GROUP)
    if me != api[-1]:
        pytest.skip("runs once, from the last api host")
    from testinfra import get_host

    hosts = [get_host(f"ansible://{h}", ansible_inventory=host.backend.ansible_inventory) for h in api]
    units = {h: [f"todo-api@{n}" for n in h.ansible.get_variables()["todo_api_instances"]] for h in hosts}
    try:
        for h, us in units.items():
            h.run_expect([0], "systemctl stop " + " ".join(us))
        status, headers, body = http(f"{lb_url}/api/todos")
        assert status == 503
        assert headers["Content-Type"].startswith("application/json")
        assert headers["Retry-After"]
        assert json_body(body) == {"error": "no healthy API instance", "detail": "every instance refused, failed or timed out"}
    finally:
        for h, us in units.items():
            h.run("systemctl start " + " ".join(us))
        assert poll(lambda: http(f"{lb_url}/api/health")[0] == 200, timeout=90, every=1)
        assert poll(
            lambda: {http(f"{lb_url}/api/health")[1].get("X-Instance") for _ in range(4)} == INSTANCES,
            timeout=60,
            every=1,
        )
