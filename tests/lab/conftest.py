"""Helpers for the tests that drive the nspawn lab (they need root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LABCTL = [sys.executable, "-m", "lab"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def labctl(
    *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*LABCTL, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"labctl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def lab_nodes() -> list[dict[str, str]]:
    return list(json.loads(labctl("status", "--json").stdout))


def lab_is_up() -> bool:
    return Path("/var/lib/halab/state.json").exists()


def on_node(node: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = labctl("ssh", node, "--", command, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"on {node}: {command!r} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def lab() -> None:
    """A running lab (booted if none is)."""
    labctl("up")


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
        "state_dir": Path("/var/lib/halab").exists(),
    }
