"""The lab topology, read from topology.yml at the repository root."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_FILE = REPO_ROOT / "topology.yml"


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    groups: tuple[str, ...]
    memory_mb: int
    host_vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    name: str
    network: ipaddress.IPv4Network
    gateway: str
    domain: str
    nodes: tuple[Node, ...]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise KeyError(f"unknown node {name!r} (the lab has: {known})")

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen


def load(path: Path = TOPOLOGY_FILE) -> Topology:
    raw = yaml.safe_load(path.read_text())
    net = raw["network"]
    network = ipaddress.IPv4Network(net["cidr"])
    nodes = []
    for name, spec in raw["nodes"].items():
        address = spec["address"]
        if ipaddress.IPv4Address(address) not in network:
            raise ValueError(f"{path.name}: {name} address {address} is outside {network}")
        nodes.append(
            Node(
                name=name,
                address=address,
                groups=tuple(spec.get("groups", [])),
                memory_mb=int(spec.get("memory_mb", 512)),
                host_vars=dict(spec.get("host_vars") or {}),
            )
        )
    return Topology(
        name=net["name"],
        network=network,
        gateway=net["gateway"],
        domain=net.get("domain", "halab.test"),
        nodes=tuple(nodes),
    )
