"""The nspawn lab (lab/labctl): driving it, and a root command on one of its nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from lab import paths
from lab.lab import BRIDGE
from lab.node import machine_name

__all__ = ["bridge", "host_snapshot", "lab_is_up", "lab_nodes", "labctl", "machine_name", "on_node", "state_of"]

from .run import run

LABCTL = [sys.executable, "-m", "lab"]


def labctl(
    *args: str, check: bool = True, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return run([*LABCTL, *args], check=check, env=env, timeout=timeout, what=f"labctl {' '.join(args)}")


def pull_plug(node: str) -> None:
    """The node's power cut: its machine killed at once, no shutdown."""
    labctl("stop", node, "--now")


def plug_in(node: str) -> None:
    labctl("start", node)


def on_node(node: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A command as root on a lab node, over the lab's SSH (the management plane)."""
    return run([*LABCTL, "ssh", node, "--", command], check=check, timeout=timeout, what=f"on {node}: {command!r}")


def lab_nodes() -> list[dict[str, str]]:
    return list(json.loads(labctl("status", "--json").stdout))


def state_of(node: str) -> str:
    return next(row["state"] for row in lab_nodes() if row["node"] == node)


def lab_is_up() -> bool:
    return paths.STATE_FILE.exists()


def bridge() -> str:
    """The lab's bridge on the host, as the lab driver names it."""
    return BRIDGE


def host_snapshot() -> dict[str, object]:
    """What the lab may touch on the host, to compare before `up` and after `down`."""

    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False).stdout

    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/**/") if "halab" in str(p))
    # A process whose root is not the host's lives in a container.
    foreign_roots = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "root") != "/":
                    foreign_roots.append(proc.name)
            except OSError:
                pass
    return {
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in sh("ip -o link show").splitlines()),
        "addresses": sorted(sh("ip -o addr show | awk '{print $2, $4}'").splitlines()),
        "routes": sorted(sh("ip route show").splitlines()),
        "nft": sh("nft list ruleset"),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "mounts": sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()),
        "cgroups": cgroups,
        # A zombie nspawn is gone already, only not reaped yet by init.
        "nspawn": sh("ps -eo stat=,pid=,comm= | awk '$1 !~ /^Z/ && $3 == \"systemd-nspawn\"'").strip(),
        "container_processes": foreign_roots,
        "state_dir": paths.STATE_DIR.exists(),
        "ssh_client_config": paths.SSH_CLIENT_CONFIG.exists(),
    }
