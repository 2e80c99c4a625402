"""The fault verbs the failover tests use: node loss, reboot, partition."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.lab import lab_nodes, labctl, machine_name, on_node, state_of
from tests.support.model import LOADBALANCER_GROUP, MONITORING_GROUP, SSH_PORT, first
from tests.support.net import tcp_open

pytestmark = pytest.mark.usefixtures("lab")

# The node the faults hit, and a peer that looks at it.
NODE = first(MONITORING_GROUP).name
PEER = first(LOADBALANCER_GROUP)


def reachable(address: str) -> bool:
    """sshd on the node answers a TCP connect from the host."""
    return tcp_open(address, SSH_PORT)


def test_stop_then_start_keeps_the_nodes_disk() -> None:
    on_node(NODE, "echo kept > /var/tmp/halab-marker")
    boot_id = on_node(NODE, "cat /proc/sys/kernel/random/boot_id").stdout
    labctl("stop", NODE, "--now")
    assert state_of(NODE) == "stopped"
    assert on_node(PEER.name, f"ping -c1 -W1 {NODE}", check=False).returncode != 0
    labctl("start", NODE)
    assert state_of(NODE) == "running"
    assert on_node(NODE, "cat /var/tmp/halab-marker").stdout.strip() == "kept"
    assert on_node(NODE, "cat /proc/sys/kernel/random/boot_id").stdout != boot_id


def test_reboot_comes_back_running() -> None:
    labctl("reboot", NODE)
    assert state_of(NODE) == "running"
    assert on_node(NODE, "systemctl is-system-running").stdout.strip() in ("running", "degraded")


def test_partition_cuts_the_node_off_and_heal_restores_it() -> None:
    labctl("partition", NODE)
    try:
        assert state_of(NODE) == "partitioned"
        assert on_node(PEER.name, f"ping -c1 -W1 {NODE}", check=False).returncode != 0
        # It keeps running: systemd inside is untouched, only its link is down.
        pgrep = ["pgrep", "-f", "--", f"--machine={machine_name(NODE)}"]
        assert subprocess.run(pgrep, capture_output=True, check=False).returncode == 0
        # The tools say so: status asks systemd through the node's namespaces, ssh names the cure,
        # and the console reaches the node without its network.
        row = next(r for r in lab_nodes() if r["node"] == NODE)
        assert row["systemd"] in ("running", "degraded"), row
        refused = labctl("ssh", NODE, "--", "true", check=False, timeout=30)
        assert refused.returncode == 1 and f"labctl heal {NODE}" in refused.stderr, refused.stderr
        console = labctl("console", NODE, "--", "hostname", timeout=30)
        assert console.stdout.strip() == NODE
    finally:
        labctl("heal", NODE)
    assert state_of(NODE) == "running"
    assert on_node(PEER.name, f"ping -c1 -W2 {NODE}", check=False).returncode == 0
    assert reachable(PEER.address)
