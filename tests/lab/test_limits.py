"""Memory limits really bite inside a node, and nodes' cgroups are their own."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.lab import on_node
from tests.support.model import API_GROUP, TOPO

pytestmark = pytest.mark.usefixtures("lab")

# Allocates and touches 300 MB, page by page, so the memory is really resident.
# Two API nodes (they have room for a 300 MB program).
APP, OTHER_APP = (n.name for n in TOPO.group(API_GROUP)[:2])
HOG = "python3 -c 'b = bytearray(300 * 2**20); b[::4096] = bytes(len(b[::4096]))'"


def test_memorymax_100m_unit_is_oom_killed_by_the_kernel() -> None:
    unit = f"halab-oomtest-{int(time.time())}"
    result = on_node(
        APP,
        f"systemd-run --wait --unit={unit} -p MemoryMax=100M {HOG}; journalctl -k -q --no-pager | tail -50",
        check=False,
    )
    out = result.stdout + result.stderr
    assert "Finished with result: signal" in out or "result: oom-kill" in out, out
    assert "status=KILL" in out or "oom-kill" in out, out


def test_unlimited_unit_allocating_300m_succeeds() -> None:
    # The control: the same program without the limit runs to the end, so
    # the kill above came from MemoryMax, not from the node being too small.
    result = on_node(APP, f"systemd-run --wait -q {HOG} && echo finished-ok", check=False)
    assert "finished-ok" in result.stdout, result.stdout + result.stderr


def test_same_unit_name_on_two_nodes_keeps_its_own_limit() -> None:
    unit = "halab-collide.service"
    limits = {APP: "150M", OTHER_APP: "250M"}
    try:
        for node, limit in limits.items():
            on_node(node, f"systemd-run --unit={unit} -p MemoryMax={limit} sleep 300")
        for node, limit in limits.items():
            want = int(limit[:-1]) * 2**20
            read = on_node(
                node,
                f"cat /sys/fs/cgroup/memory/system.slice/{unit}/memory.limit_in_bytes 2>/dev/null "
                f"|| cat /sys/fs/cgroup/system.slice/{unit}/memory.max",
            ).stdout.strip()
            assert int(read) == want, f"{node}: {unit} limit {read}, want {want}"
            shown = on_node(node, f"systemctl show -p MemoryMax --value {unit}").stdout.strip()
            assert int(shown) == want
        # Seen from the host: two cgroup directories, one below each node's own.
        host_side = {
            limit_file.read_text().strip()
            for limit_file in Path("/sys/fs/cgroup/memory").glob(f"**/halab/*/**/{unit}/memory.limit_in_bytes")
        }
        assert host_side == {str(int(v[:-1]) * 2**20) for v in limits.values()}
    finally:
        for node in limits:
            on_node(node, f"systemctl stop {unit}", check=False)
