"""The system model: topology.yml read once, and what follows from it.

topology.yml is the one file a person edits. It holds the lab's nodes
(addresses, groups, which API instances each runs), the floating addresses,
and the system's service ports and paths. Everything else is computed here:
each API instance's port and management socket, each group's members, the
public address. Python (lab/, tests/, vagrant/) imports this module; Ansible
reads the same file and the same rules through plugins/vars/halab_model.py
and plugins/filter/halab_model.py, which call `api_instances` below.
"""

from __future__ import annotations

import copy
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
# HALAB_TOPOLOGY points labctl, the tests, the Ansible plugins and the Vagrantfile at
# another file (a copy with one more API node; vagrant/vlab's compacted model).
TOPOLOGY_FILE = Path(os.environ.get("HALAB_TOPOLOGY") or REPO_ROOT / "topology.yml")

# The inventory groups the roles and playbooks are written against.
LOADBALANCER_GROUP = "loadbalancer"
API_GROUP = "api"
REDIS_GROUP = "redis"
SENTINEL_GROUP = "sentinel"
MONITORING_GROUP = "monitoring"


@dataclass(frozen=True)
class Instance:
    """One todo API instance: systemd unit todo-api@<id> on `host`."""

    id: int
    host: str
    address: str
    port: int
    socket: str

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


def api_instances(hosts: Iterable[tuple[str, str, Sequence[int]]], base_port: int, socket_template: str) -> list[Instance]:
    """The rule, written once: the k-th instance on a host (k from 0) listens on base_port + k.

    `hosts` is (host name, address, instance ids) per API host, in inventory order.
    """
    instances = []
    seen: dict[int, str] = {}
    for host, address, ids in hosts:
        for index, raw_id in enumerate(ids):
            instance_id = int(raw_id)
            if instance_id in seen:
                raise ValueError(f"API instance {instance_id} is on both {seen[instance_id]} and {host}")
            seen[instance_id] = host
            instances.append(
                Instance(
                    id=instance_id,
                    host=host,
                    address=address,
                    port=int(base_port) + index,
                    socket=socket_template.format(instance=instance_id),
                )
            )
    return instances


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    groups: tuple[str, ...]
    memory_mb: int
    host_vars: dict[str, Any] = field(default_factory=dict)

    @property
    def instance_ids(self) -> list[int]:
        return [int(i) for i in self.host_vars.get("todo_api_instances", [])]


@dataclass(frozen=True)
class FloatingAddress:
    """An address that moves between the members of a group (VRRP)."""

    name: str
    address: str
    group: str


@dataclass(frozen=True)
class Services:
    """The system's ports and paths (topology.yml's `services`)."""

    ports: Mapping[str, int]
    management_socket: str
    limits: Mapping[str, int]
    balancer_state_file: str = "/run/halab/balancer.json"

    def port(self, name: str) -> int:
        try:
            return self.ports[name]
        except KeyError:
            raise KeyError(f"no port {name!r} in topology.yml services.ports (has: {', '.join(self.ports)})") from None


@dataclass(frozen=True)
class Topology:
    name: str
    network: ipaddress.IPv4Network
    gateway: str
    domain: str
    nodes: tuple[Node, ...]
    services: Services
    floating: tuple[FloatingAddress, ...] = ()

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise KeyError(f"unknown node {name!r} (the lab has: {known})")

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    def group(self, name: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if name in n.groups)

    @property
    def instances(self) -> list[Instance]:
        return api_instances(
            ((n.name, n.address, n.instance_ids) for n in self.group(API_GROUP)),
            self.services.port("todo_api"),
            self.services.management_socket,
        )

    def instance(self, instance_id: int | str) -> Instance:
        for inst in self.instances:
            if inst.id == int(instance_id):
                return inst
        raise KeyError(f"no API instance {instance_id} (the lab has: {', '.join(str(i.id) for i in self.instances)})")

    @property
    def public_address(self) -> str:
        """Where clients reach the system: the floating `public` address, else the one load balancer."""
        for fl in self.floating:
            if fl.name == "public":
                return fl.address
        balancers = self.group(LOADBALANCER_GROUP)
        if len(balancers) != 1:
            raise ValueError("several load balancers need a floating address named 'public' in topology.yml")
        return balancers[0].address

    def floating_in(self, group: str) -> tuple[FloatingAddress, ...]:
        return tuple(f for f in self.floating if f.group == group)

    @property
    def public_url(self) -> str:
        port = self.services.port("http")
        return f"http://{self.public_address}" + ("" if port == 80 else f":{port}")

    def url(self, node: str, port_name: str) -> str:
        return f"http://{self.node(node).address}:{self.services.port(port_name)}"


def _services(raw: Mapping[str, Any]) -> Services:
    ports = {str(k): int(v) for k, v in (raw.get("ports") or {}).items()}
    limits = {str(k): int(v) for k, v in (raw.get("limits") or {}).items()}
    return Services(
        ports=ports,
        management_socket=str(raw["management_socket"]),
        limits=limits,
        balancer_state_file=str(raw["balancer_state_file"]),
    )


def compacted(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The model with its `compact` placement applied: each node named there is folded into
    the node it names, which gains its groups, host variables and memory. The folded node's
    address is no longer used; everything else (services, floating addresses) is unchanged."""
    model = copy.deepcopy(dict(raw))
    folds = model.pop("compact", None) or {}
    nodes = model["nodes"]
    for guest, host in folds.items():
        if guest not in nodes or host not in nodes:
            raise ValueError(f"compact: {guest} -> {host} names a node the model lacks (has: {', '.join(nodes)})")
        if host in folds:
            raise ValueError(f"compact: {guest} -> {host}, but {host} is folded itself")
        folded, target = nodes.pop(guest), nodes[host]
        clash = set(folded.get("host_vars") or {}) & set(target.get("host_vars") or {})
        if clash:
            raise ValueError(f"compact: {guest} and {host} both set {', '.join(sorted(clash))}")
        target["groups"] = [
            *target.get("groups", []),
            *(g for g in folded.get("groups", []) if g not in target.get("groups", [])),
        ]
        target["memory_mb"] = int(target.get("memory_mb", 512)) + int(folded.get("memory_mb", 512))
        target["host_vars"] = {**(target.get("host_vars") or {}), **(folded.get("host_vars") or {})}
    return model


def load(path: Path = TOPOLOGY_FILE) -> Topology:
    raw = yaml.safe_load(path.read_text())
    net = raw["network"]
    network = ipaddress.IPv4Network(net["cidr"])

    def inside(what: str, address: str) -> str:
        if ipaddress.IPv4Address(address) not in network:
            raise ValueError(f"{path.name}: {what} address {address} is outside {network}")
        return address

    nodes = tuple(
        Node(
            name=name,
            address=inside(name, spec["address"]),
            groups=tuple(spec.get("groups", [])),
            memory_mb=int(spec.get("memory_mb", 512)),
            host_vars=dict(spec.get("host_vars") or {}),
        )
        for name, spec in raw["nodes"].items()
    )
    floating = tuple(
        FloatingAddress(name=name, address=inside(name, spec["address"]), group=spec["group"])
        for name, spec in (raw.get("floating") or {}).items()
    )
    groups = {g for n in nodes for g in n.groups}
    for fl in floating:
        if fl.group not in groups:
            raise ValueError(f"{path.name}: floating address {fl.name!r} moves in group {fl.group!r}, which has no node")
    taken = [n.address for n in nodes] + [f.address for f in floating] + [net["gateway"]]
    duplicates = sorted({a for a in taken if taken.count(a) > 1})
    if duplicates:
        raise ValueError(f"{path.name}: address used twice: {', '.join(duplicates)}")
    topo = Topology(
        name=net["name"],
        network=network,
        gateway=net["gateway"],
        domain=net.get("domain", "halab.test"),
        nodes=nodes,
        services=_services(raw["services"]),
        floating=floating,
    )
    topo.instances  # noqa: B018 - validates: no instance id on two hosts
    return topo
