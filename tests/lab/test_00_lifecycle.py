"""labctl up/down: nothing left behind, idempotent, recovers from a crash, clear errors.

These tests take the lab down and up again, so they run only when no lab is
up when the session starts (as in CI); with a lab running they are skipped
rather than destroy a provisioned lab. They run first (the file name sorts
first); each still starts from `down`, whatever ran before it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.inventory import LAB_INVENTORY
from lab.paths import SSH_CLIENT_CONFIG
from lab.paths import STATE_FILE as STATE
from tests.support.lab import bridge, host_snapshot, lab_is_up, lab_nodes, labctl
from tests.support.model import TOPO

destructive = pytest.mark.skipif(lab_is_up(), reason="a lab is up: `make down` first to run the up/down tests")


@destructive
def test_down_leaves_the_host_exactly_as_before_up() -> None:
    labctl("down")
    before = host_snapshot()
    labctl("up")
    during = host_snapshot()
    assert during["nspawn"], "up started no node"
    assert during != before
    labctl("down")
    after = host_snapshot()
    diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not diff, f"the host differs after down: {json.dumps(diff, indent=1)}"


@destructive
def test_bridge_or_address_taken_is_a_clear_error() -> None:
    labctl("down")
    lab_bridge = bridge()
    subprocess.run(["ip", "link", "add", lab_bridge, "type", "bridge"], check=True)
    try:
        result = labctl("up", check=False)
        assert result.returncode == 1
        assert f"{lab_bridge} already exists" in result.stderr
    finally:
        subprocess.run(["ip", "link", "delete", lab_bridge], check=True)
    subprocess.run(["ip", "link", "add", "halabtest0", "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", f"{TOPO.gateway}/{TOPO.prefixlen}", "dev", "halabtest0"], check=True)
    try:
        result = labctl("up", check=False)
        assert result.returncode == 1
        assert f"{TOPO.gateway} is already taken by halabtest0" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        subprocess.run(["ip", "link", "delete", "halabtest0"], check=True)
    assert not lab_is_up()


@destructive
def test_up_after_a_crash_cleans_up_and_succeeds() -> None:
    labctl("down")
    labctl("up")
    state = json.loads(STATE.read_text())
    for info in state["nodes"].values():
        os.kill(info["pid"], signal.SIGKILL)  # leaves mounts, cgroups, bridge, NAT behind
    time.sleep(1)
    result = labctl("up")
    assert "cleaning up" in result.stdout
    assert all(row["state"] == "running" and row["systemd"] in ("running", "degraded") for row in lab_nodes())


def test_up_on_a_running_lab_changes_nothing(lab: None) -> None:
    inventory = LAB_INVENTORY
    state_before = STATE.read_text()
    mtime = inventory.stat().st_mtime_ns
    started = time.monotonic()
    result = labctl("up")
    elapsed = time.monotonic() - started
    print(f"\nlabctl up on a running lab: {elapsed:.1f} s")
    assert "nothing to do" in result.stdout
    assert STATE.read_text() == state_before
    assert inventory.stat().st_mtime_ns == mtime


def test_plain_ssh_reaches_every_node_by_its_name(lab: None) -> None:
    """`ssh app1` from the host, as the README and the page say (labctl's ssh_config snippet)."""
    assert SSH_CLIENT_CONFIG.is_file()
    for n in TOPO.nodes:
        result = subprocess.run(
            ["ssh", "-o", "BatchMode=yes", n.name, "hostname"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert (result.returncode, result.stdout.strip()) == (0, n.name), f"ssh {n.name}: {result.stderr}"


def test_missing_host_package_is_named(tmp_path: Path) -> None:
    # A PATH with every tool but systemd-nspawn.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("mmdebstrap", "nft", "ip", "ssh", "ssh-keygen", "mountpoint"):
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    result = labctl("up", check=False, env={**os.environ, "PATH": str(bindir)})
    assert result.returncode == 1
    assert "systemd-container" in result.stderr
    assert "Traceback" not in result.stderr
