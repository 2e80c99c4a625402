"""Host-side plumbing: preflight checks, cgroups, the bridge and NAT."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .errors import die

# labctl's one command runner (lab/run.py), also reachable as host.run.
from .run import run as run
from .topology import Topology

CGROUP_ROOT = Path("/sys/fs/cgroup")
NFT_TABLE = "halab"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

# Commands labctl runs on the host, and the Debian package that brings each.
HOST_COMMANDS = {
    "systemd-nspawn": "systemd-container",
    "mmdebstrap": "mmdebstrap",
    "nft": "nftables",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mountpoint": "util-linux",
}


def preflight() -> None:
    if os.geteuid() != 0:
        die("labctl needs root (it creates a bridge, cgroups and containers): run it with sudo")
    missing = sorted({pkg for cmd, pkg in HOST_COMMANDS.items() if shutil.which(cmd) is None})
    if missing:
        die("missing host packages: " + " ".join(missing), hint=f"install them: apt-get install -y {' '.join(missing)}")
    if not (CGROUP_ROOT / "memory" / "cgroup.procs").exists() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        die(f"no memory cgroup controller under {CGROUP_ROOT}: the lab cannot enforce MemoryMax here")


# ---------------------------------------------------------------- cgroups


def own_cgroup(controller: str) -> str:
    """This process's cgroup path in a v1 hierarchy (e.g. 'memory')."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return "/"


def cgroup_layout() -> list[Path]:
    """The parent directories under which each node gets cgroups of its own.

    Hybrid layout (this machine kind): the v1 memory hierarchy, below the
    cgroup we were started in (its own limits stay untouched), plus the
    name=systemd v1 hierarchy and the empty unified one at the root.
    Pure cgroup v2: one directory below our own cgroup.
    """
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure v2
        own = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
        return [CGROUP_ROOT / own.lstrip("/") / "halab"]
    parents = [CGROUP_ROOT / "memory" / own_cgroup("memory").lstrip("/") / "halab"]
    for name in ("systemd", "unified"):
        if (CGROUP_ROOT / name / "cgroup.procs").exists():
            parents.append(CGROUP_ROOT / name / "halab")
    return parents


def make_node_cgroups(parents: list[str], node: str, memory_mb: int) -> list[str]:
    dirs = []
    for parent in parents:
        path = Path(parent) / node
        path.mkdir(parents=True, exist_ok=True)
        dirs.append(str(path))
        # The node's memory is capped like a VM's RAM; the units inside get
        # their own, smaller limits below it.
        limit = path / "memory.limit_in_bytes"
        if limit.exists():
            limit.write_text(str(memory_mb * 1024 * 1024))
    return dirs


def join_cgroups(dirs: list[str]) -> None:
    """Move the calling process into the node's cgroups (runs after fork)."""
    pid = str(os.getpid())
    for path in dirs:
        with open(os.path.join(path, "cgroup.procs"), "w") as procs:
            procs.write(pid)


def cgroup_pids(dirs: Iterable[Path]) -> set[int]:
    """Every process in these cgroups and their children (cgroups may vanish while we read)."""
    pids: set[int] = set()
    for top in dirs:
        for here, _, _ in os.walk(top):
            try:
                pids.update(int(pid) for pid in Path(here, "cgroup.procs").read_text().split())
            except OSError:
                continue
    return pids


def remove_cgroup_tree(path: Path) -> list[str]:
    """rmdir a cgroup directory depth-first; return what could not go."""
    if not path.is_dir():
        return []
    left = []
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        left += remove_cgroup_tree(child)
    try:
        path.rmdir()
    except OSError as exc:
        left.append(f"{path}: {exc.strerror}")
    return left


# ---------------------------------------------------------------- network


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def address_owner(address: str) -> str | None:
    out = run(["ip", "-o", "-4", "addr", "show"]).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3].split("/")[0] == address:
            return fields[1]
    return None


def create_bridge(topo: Topology, bridge: str) -> None:
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{topo.gateway}/{topo.prefixlen}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "delete", name])


def nat_ruleset(topo: Topology, bridge: str) -> str:
    # The nodes reach the package registries through the host, the way a
    # Vagrant VM does through its NAT interface.
    return f"""
table ip {NFT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {topo.network} oifname != "{bridge}" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{bridge}" accept
        oifname "{bridge}" ct state established,related accept
    }}
}}
"""


def nat_present() -> bool:
    return run(["nft", "list", "table", "ip", NFT_TABLE], check=False).returncode == 0


def enable_nat(topo: Topology, bridge: str) -> None:
    if not nat_present():
        run(["nft", "-f", "-"], input_text=nat_ruleset(topo, bridge))


def disable_nat() -> None:
    if nat_present():
        run(["nft", "delete", "table", "ip", NFT_TABLE])


def read_ip_forward() -> str:
    return IP_FORWARD.read_text().strip()


def write_ip_forward(value: str) -> None:
    IP_FORWARD.write_text(value + "\n")


def mounted(path: Path) -> bool:
    return run(["mountpoint", "-q", str(path)], check=False).returncode == 0
