"""Adding an API node is one edit of the model.

A copy of topology.yml gets one more node in the api group with the next
instance number; nothing else changes (the test checks that git sees no
change). The lab is rebuilt from the copy (HALAB_TOPOLOGY points labctl and
the Ansible plugins at it) and provisioned with playbooks/site.yml, and then:
the new instance answers through the load balancer and stores a todo in Redis
(whose firewall must let the new node in), Prometheus scrapes it, and the new
node's firewall lets the load balancer and Prometheus in. At the end the lab
is rebuilt from topology.yml as it was.

    make scale-test          # about 10 minutes; not part of make test
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from lab import topology
from tests.support.ansible import parse_recap, playbook
from tests.support.lab import labctl
from tests.support.run import run
from tests.support.wait import wait_until

pytestmark = pytest.mark.scale


def with_one_more_api_node(source: Path, target: Path) -> tuple[str, int]:
    """Write `source` plus one API node to `target`: the one edit a person makes. Returns its name and instance."""
    raw = yaml.safe_load(source.read_text())
    model = topology.load(source)
    taken = {ipaddress.IPv4Address(a) for a in [n.address for n in model.nodes] + [model.gateway]}
    address = next(a for a in model.network.hosts() if a > max(taken))
    instance = max(i.id for i in model.instances) + 1
    name = f"app{instance}"
    template = model.group(topology.API_GROUP)[0]
    raw["nodes"][name] = {
        "address": str(address),
        "groups": [topology.API_GROUP],
        "memory_mb": template.memory_mb,
        "host_vars": {"todo_api_instances": [instance]},
    }
    target.write_text(yaml.safe_dump(raw, sort_keys=False))
    return name, instance


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[topology.Topology, str, int, dict[str, str]]]:
    before = run(["git", "status", "--porcelain"]).stdout
    copy = tmp_path_factory.mktemp("scale") / "topology.yml"
    name, instance = with_one_more_api_node(topology.TOPOLOGY_FILE, copy)
    env = {**os.environ, "HALAB_TOPOLOGY": str(copy)}
    labctl("down")
    try:
        labctl("up", env=env, timeout=900)
        recap = parse_recap(playbook("site.yml", env_extra=env, timeout=1500).stdout)
        assert name in recap, "the new node was not provisioned"
        yield topology.load(copy), name, instance, env
        assert run(["git", "status", "--porcelain"]).stdout == before, "adding a node touched a tracked file"
    finally:
        labctl("down", env=env)
        labctl("up", timeout=900)
        recap = parse_recap(playbook("site.yml", timeout=1500).stdout)
        assert recap and all(not r["failed"] and not r["unreachable"] for r in recap.values())


def test_the_new_instance_serves_through_the_load_balancer(scaled: tuple[topology.Topology, str, int, dict[str, str]]) -> None:
    model, _, instance, _ = scaled

    def served_by_new() -> bool:
        return bool(httpx.get(f"{model.public_url}/api/health", timeout=5).headers.get("X-Instance") == str(instance))

    wait_until(f"instance {instance} behind the load balancer", served_by_new, timeout=60, every=0.1)

    # Its writes reach Redis (the redis role's firewall lets the new node in). Only the load
    # balancer may reach it, so POST through NGINX until the new instance is the one that answers.
    def created_by_new() -> str | None:
        res = httpx.post(f"{model.public_url}/api/todos", json={"texto": "from the new node"}, timeout=5)
        assert res.status_code == 201, res.text
        todo_id = str(res.json()["id"])
        assert httpx.delete(f"{model.public_url}/api/todos/{todo_id}", timeout=5).status_code in (200, 204)
        return todo_id if res.headers.get("X-Instance") == str(instance) else None

    wait_until(f"a todo stored by instance {instance}", created_by_new, timeout=30, every=0.1)


def test_prometheus_scrapes_the_new_instance(scaled: tuple[topology.Topology, str, int, dict[str, str]]) -> None:
    model, name, instance, _ = scaled
    mon = model.group(topology.MONITORING_GROUP)[0]
    query = urllib.parse.quote(f'up{{job="todo_api",todo_api_instance="{instance}",node="{name}"}}')
    url = f"{model.url(mon.name, 'prometheus')}/api/v1/query?query={query}"

    def scraped_up() -> bool:
        result = httpx.get(url, timeout=5).json()["data"]["result"]
        return bool(result) and result[0]["value"][1] == "1"

    wait_until(f"Prometheus scraping instance {instance}", scraped_up, timeout=90, every=2)


def test_the_firewall_lets_in_exactly_the_load_balancer_and_monitoring(
    scaled: tuple[topology.Topology, str, int, dict[str, str]],
) -> None:
    model, name, instance, env = scaled
    port = model.instance(instance).port
    ruleset = json.loads(labctl("ssh", name, "--", "nft -j list ruleset", env=env).stdout)["nftables"]
    sources: set[str] = set()
    for item in ruleset:
        rule = item.get("rule", {})
        exprs = rule.get("expr", [])
        if not any(e.get("match", {}).get("right") in (port, {"set": [port]}) for e in exprs):
            continue
        for e in exprs:
            right = e.get("match", {}).get("right")
            if isinstance(right, dict) and "set" in right:
                sources.update(str(s) for s in right["set"])
            elif isinstance(right, str) and right.count(".") == 3:
                sources.add(right)
    allowed = {n.address for n in model.group(topology.LOADBALANCER_GROUP) + model.group(topology.MONITORING_GROUP)}
    assert sources == allowed
