"""labctl's pure parts: topology, inventories, names, and its refusals."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from lab import cli, host, inventory, node, ssh, topology
from lab.paths import KNOWN_HOSTS, SSH_KEY


def test_topology_has_its_nodes_on_one_network() -> None:
    topo = topology.load()
    assert [n.name for n in topo.nodes] == ["lb1", "lb2", "app1", "app2", "data1", "data2", "mon"]
    assert {g for n in topo.nodes for g in n.groups} == {"loadbalancer", "api", "redis", "sentinel", "monitoring"}
    addresses = [n.address for n in topo.nodes] + [topo.gateway]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.IPv4Address(a) in topo.network for a in addresses)
    assert topo.node("app1").host_vars == {"todo_api_instances": [1]}
    assert topo.node("app2").host_vars == {"todo_api_instances": [2]}


def test_topology_rejects_an_address_outside_the_network(tmp_path: Path) -> None:
    bad = tmp_path / "topology.yml"
    bad.write_text(
        yaml.safe_dump(
            {
                "network": {"name": "x", "cidr": "198.51.100.0/24", "gateway": "198.51.100.1"},
                "nodes": {"lb": {"address": "10.0.0.5", "groups": ["loadbalancer"]}},
            }
        )
    )
    with pytest.raises(ValueError, match="outside"):
        topology.load(bad)


def test_the_compact_placement_keeps_every_group_on_fewer_nodes() -> None:
    raw = yaml.safe_load(topology.TOPOLOGY_FILE.read_text())
    full = topology.load()
    compact_file = topology.compacted(raw)
    assert "compact" not in compact_file
    assert raw["nodes"]["data1"], "compacted() must not change its argument"
    folded = set(raw["compact"])
    assert [n for n in compact_file["nodes"]] == [n.name for n in full.nodes if n.name not in folded]
    for guest, host_name in raw["compact"].items():
        target = compact_file["nodes"][host_name]
        assert set(target["groups"]) == set(full.node(host_name).groups) | set(full.node(guest).groups)
        assert target["memory_mb"] == full.node(host_name).memory_mb + full.node(guest).memory_mb
    # every group keeps as many members as before: the Redis pair on two nodes, three Sentinels on three
    assert {g: sum(g in spec["groups"] for spec in compact_file["nodes"].values()) for g in ("redis", "sentinel", "api")} == {
        g: len(full.group(g)) for g in ("redis", "sentinel", "api")
    }
    assert compact_file["services"] == raw["services"]


def test_a_compact_placement_that_cannot_be_applied_is_refused() -> None:
    nodes = {"lb": {"address": "10.0.0.2", "groups": ["loadbalancer"]}, "app": {"address": "10.0.0.3", "groups": ["api"]}}
    with pytest.raises(ValueError, match="db -> app names a node the model lacks"):
        topology.compacted({"nodes": nodes, "compact": {"db": "app"}})
    with pytest.raises(ValueError, match="lb -> app, but app is folded itself"):
        topology.compacted({"nodes": nodes, "compact": {"lb": "app", "app": "lb"}})


def test_a_compact_placement_refuses_two_values_for_one_host_variable() -> None:
    nodes = {
        "app": {"address": "10.0.0.3", "groups": ["api"], "host_vars": {"x": 1}},
        "db": {"address": "10.0.0.4", "groups": ["redis"], "host_vars": {"x": 2}},
    }
    with pytest.raises(ValueError, match="both set x"):
        topology.compacted({"nodes": nodes, "compact": {"db": "app"}})


def test_unknown_node_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="lb1, lb2, app1, app2, data1, data2, mon"):
        topology.load().node("app3")


def test_inventory_groups_and_addresses_come_from_the_topology() -> None:
    topo = topology.load()
    inv = inventory.render(topo, {"ansible_user": "root"})
    groups = inv["all"]["children"]
    assert set(groups) == {"loadbalancer", "api", "redis", "sentinel", "monitoring"}
    assert groups["api"]["hosts"]["app2"] == {"ansible_host": topo.node("app2").address, "todo_api_instances": [2]}
    assert groups["loadbalancer"]["hosts"]["lb1"]["ansible_host"] == topo.node("lb1").address


def test_nat_masquerades_only_the_lab_network_leaving_by_another_interface() -> None:
    topo = topology.load()
    rules = host.nat_ruleset(topo, "halab0")
    assert f'ip saddr {topo.network} oifname != "halab0" masquerade' in rules


def test_veth_names_fit_an_interface_name() -> None:
    for n in topology.load().nodes:
        assert len(node.veth_name(n.name)) <= 15


def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert cli.main(["up"]) == 1
    err = capsys.readouterr().err
    assert "needs root" in err and "Traceback" not in err


def test_unknown_node_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ssh", "nosuchnode"]) == 1  # no lab, or no such node: both said plainly
    err = capsys.readouterr().err
    assert err.startswith("labctl: ")


def test_the_ssh_client_config_names_every_node(tmp_path: Path) -> None:
    topo = topology.load()
    text = ssh.client_config_text(topo.nodes)
    for n in topo.nodes:
        assert f"Host {n.name}\n    HostName {n.address}\n" in text
    assert f"Host {' '.join(n.name for n in topo.nodes)}\n    User root\n    IdentityFile {SSH_KEY}\n" in text
    assert f"UserKnownHostsFile {KNOWN_HOSTS}\n    StrictHostKeyChecking yes\n" in text
    path = tmp_path / "ssh_config.d/halab.conf"
    assert ssh.write_client_config(topo.nodes, path) is True
    assert ssh.write_client_config(topo.nodes, path) is False  # unchanged: not rewritten
    assert path.read_text() == text
    ssh.remove_client_config(path)
    ssh.remove_client_config(path)  # twice is fine
    assert not path.exists()
