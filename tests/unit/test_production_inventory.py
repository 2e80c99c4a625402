"""inventory/production.example.yml holds the contract the roles rely on.

Real servers bring a hand-written inventory, so nothing in the lab's runs reads it:
these tests ask Ansible itself (the halab_model plugins, the real site.yml) what the
example means, with no server reached. Every play of site.yml must find its hosts, the
model must resolve on each host (addresses, instances, the floating address the
inventory gives in place of the lab's), and a floating address without its prefix must
be refused with a clear error.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import topology
from tests.support.run import REPO, run, venv_tool

EXAMPLE = REPO / "inventory" / "production.example.yml"

# Writes, for every host, the model as Ansible resolves it there (no connection: the
# task runs on the controller).
PROBE = """
- name: The model on each host
  hosts: all
  gather_facts: false
  tasks:
    - name: Write it on the controller
      ansible.builtin.copy:
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        content: "{{ model | to_json }}"
        mode: "0644"
      delegate_to: localhost
      become: false
      vars:
        model:
          groups: "{{ group_names }}"
          address: "{{ halab_address }}"
          public: "{{ halab_public_address }}"
          floating: "{{ halab_host_floating }}"
          instances: "{{ halab_host_instances }}"
"""


def ansible_playbook(*args: str) -> subprocess.CompletedProcess[str]:
    """This venv's ansible-playbook with the repository's ansible.cfg, on topology.yml itself."""
    tool = venv_tool("ansible-playbook")
    if not Path(tool).exists():
        pytest.skip("ansible-playbook is not in this venv")
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env.pop("HALAB_TOPOLOGY", None)
    return run([tool, *args], check=False, env=env)


def resolve(inventory: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "probe.yml"
    playbook.write_text(PROBE)
    out = tmp_path / "model"
    out.mkdir()
    return ansible_playbook("-i", str(inventory), str(playbook), "-e", f"out={out}")


def test_every_play_of_site_finds_its_hosts() -> None:
    done = ansible_playbook("-i", str(EXAMPLE), "--list-hosts", "playbooks/site.yml")
    assert done.returncode == 0, done.stderr
    counts = [int(n) for n in re.findall(r"hosts \((\d+)\):", done.stdout)]
    assert counts and len(counts) == done.stdout.count("play #"), done.stdout
    assert all(n > 0 for n in counts), done.stdout


def test_the_model_resolves_on_every_host(tmp_path: Path) -> None:
    done = resolve(EXAMPLE, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    model = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "model").glob("*.json")}
    inventory = yaml.safe_load(EXAMPLE.read_text())["all"]
    floating = inventory["vars"]["halab_floating"]["public"]
    public = ipaddress.IPv4Interface(floating["address"])
    contract = (
        topology.LOADBALANCER_GROUP,
        topology.API_GROUP,
        topology.REDIS_GROUP,
        topology.SENTINEL_GROUP,
        topology.MONITORING_GROUP,
    )
    members = {g: [h for h, m in model.items() if g in m["groups"]] for g in contract}
    assert all(members.values()), f"every group of the contract has hosts: {members}"
    assert len(members[topology.LOADBALANCER_GROUP]) == 2 and len(members[topology.REDIS_GROUP]) == 2
    sentinels = {model[h]["address"] for h in members[topology.SENTINEL_GROUP]}
    assert len(sentinels) == 3, "three Sentinels on three machines (quorum 2)"

    addresses = {h: m["address"] for h, m in model.items()}
    assert str(public.ip) not in addresses.values(), "the floating address belongs to no host"
    for host, m in model.items():
        # the inventory's floating address, not the lab's (topology.yml)
        assert m["public"] == str(public.ip), host
        holds = [f["name"] for f in m["floating"]]
        if host in members[topology.LOADBALANCER_GROUP]:
            assert holds == ["public"] and m["floating"][0]["spec"]["prefixlen"] == public.network.prefixlen
            assert ipaddress.IPv4Address(m["address"]) in public.network, "VRRP needs the LBs on its network"
        else:
            assert holds == [], host

    lab = topology.load(topology.REPO_ROOT / "topology.yml")
    instances = [i for m in model.values() for i in m["instances"]]
    assert sorted(i["id"] for i in instances) == [1, 2]
    for instance in instances:
        assert instance["address"] == addresses[instance["host"]]
        assert instance["port"] == lab.services.ports["todo_api"], "the first instance on a node"


def test_a_floating_address_without_its_prefix_is_refused(tmp_path: Path) -> None:
    inventory: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    inventory["all"]["vars"]["halab_floating"]["public"]["address"] = "203.0.113.20"
    broken = tmp_path / "production.yml"
    broken.write_text(yaml.safe_dump(inventory))
    done = resolve(broken, tmp_path)
    assert done.returncode != 0
    assert "halab_floating.public: give the address with its network's prefix" in done.stdout + done.stderr
