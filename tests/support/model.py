"""The system model as the tests see it: lab.topology, loaded once.

No test types an address, a port, a socket path, a node or a group name: it
takes them from here (or from lab.topology directly).
"""

from __future__ import annotations

from lab import topology
from lab.topology import (
    API_GROUP,
    LOADBALANCER_GROUP,
    MONITORING_GROUP,
    REDIS_GROUP,
    SENTINEL_GROUP,
    Instance,
    Node,
    Topology,
)

__all__ = [
    "API_GROUP",
    "INSTANCE_NODE",
    "LOADBALANCER_GROUP",
    "MONITORING_GROUP",
    "PUBLIC_URL",
    "REDIS_GROUP",
    "SENTINEL_GROUP",
    "SSH_PORT",
    "TOPO",
    "Instance",
    "Node",
    "Topology",
    "first",
    "instance_ids",
    "instances_on",
]

TOPO = topology.load()
# Where clients reach the system (NGINX, or the floating `public` address).
PUBLIC_URL = TOPO.public_url
# Which node runs which API instance: "1" -> "app1" ... (instance ids as the API reports them, strings).
INSTANCE_NODE = {str(i.id): i.host for i in TOPO.instances}
# sshd's port on every route (lab, VMs): the default; topology.yml has no entry for it.
SSH_PORT = 22


def first(group: str) -> Node:
    """The first node of a group (what a test picks when it needs "a monitoring node")."""
    members = TOPO.group(group)
    if not members:
        raise LookupError(f"topology.yml has no node in group {group!r}")
    return members[0]


def instance_ids() -> list[str]:
    return list(INSTANCE_NODE)


def instances_on(node: str) -> list[Instance]:
    return [i for i in TOPO.instances if i.host == node]
