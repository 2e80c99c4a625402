"""Host-side plumbing: preflight checks, cgroups, the bridge and NAT."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import die

# labctl's one command runner (lab/run.py), also reachable as host.run.
from .run import run as run
from .topology import Topology

CGROUP_ROOT = Path("/sys/fs/cgroup")
NFT_TABLE = "halab"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# While it exists, Debian's maintainer scripts start no service (man invoke-rc.d).
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

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


def proc_stat(pid: int) -> tuple[str, list[str]] | None:
    """/proc/PID/stat as (comm, the fields from the 3rd, the state, on); None: no such process.
    "pid (comm) S ...": comm may hold spaces and parentheses."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()


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


# The base chains of a NAT table: nat before routing out, filter on forwarding.
NAT_POSTROUTING = "type nat hook postrouting priority srcnat; policy accept;"
FILTER_FORWARD = "type filter hook forward priority filter; policy accept;"


def nft_table(name: str, chains: Mapping[str, tuple[str, Sequence[str]]]) -> str:
    """The text of `table ip NAME`: chain name -> (its base-chain line, its rules)."""
    text = f"\ntable ip {name} {{\n"
    for chain, (base, rules) in chains.items():
        text += f"    chain {chain} {{\n        {base}\n"
        text += "".join(f"        {rule}\n" for rule in rules)
        text += "    }\n"
    return text + "}\n"


def masquerade_ruleset(table: str, source: str, iface: str, forward_first: Sequence[str] = ()) -> str:
    """Traffic from `source` that came in on `iface` leaves by any other interface, masqueraded.

    `forward_first`: forward rules checked before the accept (drops, say).
    """
    return nft_table(
        table,
        {
            "postrouting": (NAT_POSTROUTING, [f'ip saddr {source} oifname != "{iface}" masquerade']),
            "forward": (
                FILTER_FORWARD,
                [*forward_first, f'iifname "{iface}" accept', f'oifname "{iface}" ct state established,related accept'],
            ),
        },
    )


def nat_ruleset(topo: Topology, bridge: str) -> str:
    # The nodes reach the package registries through the host, the way a
    # Vagrant VM does through its NAT interface.
    return masquerade_ruleset(NFT_TABLE, str(topo.network), bridge)


def in_netns(netns: str | None, cmd: list[str]) -> list[str]:
    """cmd as run in network namespace `netns` (None: the host's own)."""
    return cmd if netns is None else ["ip", "netns", "exec", netns, *cmd]


def nft_table_present(name: str, netns: str | None = None) -> bool:
    return run(in_netns(netns, ["nft", "list", "table", "ip", name]), check=False).returncode == 0


def replace_nft_table(name: str, ruleset: str, netns: str | None = None) -> None:
    """Load `ruleset` (a `table ip NAME {...}`) in place of any table NAME, in one transaction."""
    run(in_netns(netns, ["nft", "-f", "-"]), input_text=f"table ip {name}\ndelete table ip {name}\n{ruleset}")


def delete_nft_table(name: str, netns: str | None = None) -> None:
    if nft_table_present(name, netns):
        run(in_netns(netns, ["nft", "delete", "table", "ip", name]))


def nat_present() -> bool:
    return nft_table_present(NFT_TABLE)


def enable_nat(topo: Topology, bridge: str) -> None:
    if not nat_present():
        run(["nft", "-f", "-"], input_text=nat_ruleset(topo, bridge))


def disable_nat() -> None:
    delete_nft_table(NFT_TABLE)


def read_ip_forward() -> str:
    return IP_FORWARD.read_text().strip()


def write_ip_forward(value: str) -> None:
    IP_FORWARD.write_text(value + "\n")


def save_ip_forward(saved: Path) -> None:
    """Keep ip_forward's value in the file `saved`, unless it already holds one (the value before us)."""
    if not saved.exists():
        saved.write_text(read_ip_forward() + "\n")


def restore_ip_forward(saved: Path, needed_by: Iterable[str] = ()) -> str | None:
    """Put back the value `save_ip_forward` kept, and forget it.

    If that value is 0 but a link of `needed_by` exists (another lab that
    forwards), forwarding stays on: returns that link's name, else None.
    """
    if not saved.exists():
        return None
    before = saved.read_text().strip()
    keeper = next((link for link in needed_by if link_exists(link)), None) if before == "0" else None
    if keeper is None:
        write_ip_forward(before)
    saved.unlink()
    return keeper


# ---------------------------------------------------------------- network namespaces


def netns_exists(name: str) -> bool:
    out = run(["ip", "netns", "list"], check=False).stdout
    return any(line.split()[0] == name for line in out.splitlines() if line.strip())


def netns_of_pid(pid: int) -> str:
    """The name of the network namespace process `pid` is in ("" for the host's, or an unnamed one)."""
    return run(["ip", "netns", "identify", str(pid)], check=False).stdout.strip()


def netns_pids(name: str) -> list[int]:
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(pid) for pid in out.split() if pid.isdigit()]


def create_veth(host_end: str, peer: str, netns: str) -> None:
    """A veth pair: `host_end` here, `peer` in the namespace `netns`."""
    run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", peer, "netns", netns])


def set_address(iface: str, address: str, prefixlen: int, netns: str | None = None) -> None:
    """Give iface this address (replacing it if it is there) and bring it up."""
    run(in_netns(netns, ["ip", "addr", "replace", f"{address}/{prefixlen}", "dev", iface]))
    run(in_netns(netns, ["ip", "link", "set", iface, "up"]))


# ---------------------------------------------------------------- packages


def missing_packages(packages: Iterable[str]) -> list[str]:
    """The Debian packages of `packages` that are not installed, in their order."""
    missing = []
    for pkg in packages:
        res = run(["dpkg-query", "-W", "-f=${Status}\n", pkg], check=False)
        if not any(line.startswith("install ok installed") for line in res.stdout.splitlines()):
            missing.append(pkg)
    return missing


@contextmanager
def services_held_back() -> Iterator[None]:
    """While inside, packages installed do not start their services on this host (policy-rc.d)."""
    before = POLICY_RC_D.read_bytes() if POLICY_RC_D.exists() else None
    POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        if before is None:
            POLICY_RC_D.unlink(missing_ok=True)
        else:
            POLICY_RC_D.write_bytes(before)


def apt_install(packages: Sequence[str]) -> int:
    """apt-get update, then install `packages` without recommends and without starting their services.

    apt's output goes to the terminal (minutes of it); returns apt-get's exit status.
    """
    update = subprocess.run(["apt-get", "update", "-q"], check=False)
    if update.returncode != 0:
        return update.returncode
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with services_held_back():
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        return subprocess.run(cmd, env=env, check=False).returncode


def mounted(path: Path) -> bool:
    return run(["mountpoint", "-q", str(path)], check=False).returncode == 0
