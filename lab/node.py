"""One node's life: overlay and identity, boot, readiness, and stopping it for sure.

Each node is an overlay of the cached image (its changes in an upper
directory of its own), booted by systemd-nspawn inside cgroups of its own,
attached to the lab bridge with its topology address.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import host
from .errors import die
from .image import INIT_PATH
from .paths import NODES_DIR
from .run import run
from .ssh import public_key, ssh_run
from .state import NodeState
from .topology import Node, Topology

BOOT_TIMEOUT = 180.0
# A clean poweroff (nspawn's SIGRTMIN+3 to the node's systemd) gets this long
# before the node is killed.
STOP_TIMEOUT = 30.0
# After SIGKILL, how long the node's processes and its veth may take to go.
# SIGKILL ends a process when it next leaves the kernel; one in uninterruptible
# sleep (D: overlay writeback right after provisioning, a memory cgroup at its
# limit reclaiming) goes only when that I/O returns, and the node's network
# namespace, with the veth in it, is torn down afterwards in a kernel work
# queue. That is seconds on this 2-core machine; 30 s (the budget of a clean
# poweroff) leaves room for a loaded host and still fails the verb long before
# any test gives up on it. Past it, something cannot die: say so.
KILL_TIMEOUT = 30.0
POLL = 0.2


def machine_name(node: str) -> str:
    return f"halab-{node}"


def veth_name(node: str) -> str:
    # nspawn names the host side of a bridged veth "vb-" + machine name,
    # cut to the 15 characters an interface name may have.
    return ("vb-" + machine_name(node))[:15]


@dataclass(frozen=True)
class NodePaths:
    upper: Path  # the node's own changes to the image
    work: Path  # overlayfs's scratch directory
    root: Path  # the overlay's mount point: the node's / seen from the host
    console: Path  # what nspawn and the node's console print
    configured: Path  # exists once the node has its identity


def paths(node: str) -> NodePaths:
    base = NODES_DIR / node
    return NodePaths(base / "upper", base / "work", base / "root", base / "console.log", base / "configured")


def pid_alive(pid: int | None, node: str) -> bool:
    """True when pid is the nspawn process of this node (pids get reused)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--machine=" + machine_name(node).encode() in cmdline


def leader_pid(nspawn_pid: int) -> int | None:
    """The node's PID 1 as the host sees it: the nspawn process's child."""
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def console_command(leader: int, command: list[str]) -> list[str]:
    """command inside a running node through its namespaces, not its network (like a VM's serial
    console): it reaches a partitioned node too. The node's own PATH, not the host's."""
    path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return ["nsenter", f"--target={leader}", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "env", path, *command]


# ---------------------------------------------------------------- disk and identity


def mount_overlay(p: NodePaths, image: str) -> None:
    for d in (p.upper, p.work, p.root):
        d.mkdir(parents=True, exist_ok=True)
    if not host.mounted(p.root):
        run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={image},upperdir={p.upper},workdir={p.work}", str(p.root)])


def hosts_file(node: Node, topo: Topology) -> str:
    lines = ["127.0.0.1 localhost", f"127.0.1.1 {node.name}.{topo.domain} {node.name}"]
    lines += [f"{n.address} {n.name}.{topo.domain} {n.name}" for n in topo.nodes if n is not node]
    return "\n".join(lines) + "\n"


def interfaces_file(node: Node, topo: Topology) -> str:
    return (
        "# Written by labctl from topology.yml\n"
        "auto lo\niface lo inet loopback\n\n"
        f"auto host0\niface host0 inet static\n"
        f"    address {node.address}/{topo.prefixlen}\n"
        f"    gateway {topo.gateway}\n"
    )


def prepare(node: Node, topo: Topology, image: str) -> None:
    """Mount the node's overlay and give it its own identity (first time)."""
    p = paths(node.name)
    mount_overlay(p, image)
    if p.configured.exists():
        return
    root = p.root
    (root / "etc/hostname").write_text(node.name + "\n")
    (root / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
    (root / "etc/hosts").write_text(hosts_file(node, topo))
    (root / "etc/network/interfaces").write_text(interfaces_file(node, topo))
    run(["ssh-keygen", "-A", "-f", str(root)])
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public_key())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    p.configured.write_text("")


# ---------------------------------------------------------------- boot


def nspawn_args(node: Node, root: Path, bridge: str) -> list[str]:
    return [
        "systemd-nspawn",
        "--quiet",
        f"--directory={root}",
        f"--machine={machine_name(node.name)}",
        f"--hostname={node.name}",
        # No host systemd to register with or to make a scope for us.
        "--register=no",
        "--keep-unit",
        f"--network-bridge={bridge}",
        # SIGTERM to nspawn becomes a clean poweroff of the node's systemd.
        "--kill-signal=SIGRTMIN+3",
        "--console=read-only",
        INIT_PATH,
    ]


def boot(node: Node, cgroup_parents: list[str], bridge: str) -> NodeState:
    """Start the node's nspawn in cgroups of its own; it boots in the background."""
    p = paths(node.name)
    cgroups = host.make_node_cgroups(cgroup_parents, node.name, node.memory_mb)
    with p.console.open("ab") as console:
        proc = subprocess.Popen(
            nspawn_args(node, p.root, bridge),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: host.join_cgroups(cgroups),
        )
    return NodeState(pid=proc.pid, cgroups=cgroups, partitioned=False)


def wait_ready(nodes: list[tuple[Node, NodeState]]) -> None:
    """Wait until each node's systemd says running (or degraded); fail with their console's tail."""

    def wait(item: tuple[Node, NodeState]) -> str | None:
        node, record = item
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if not pid_alive(record.pid, node.name):
                return "its nspawn process exited during boot"
            res = ssh_run(node.address, ["systemctl", "is-system-running", "--wait"], timeout=60)
            if res.stdout.strip() in ("running", "degraded"):
                return None
            time.sleep(1)
        return f"not up after {BOOT_TIMEOUT:.0f}s (ssh or systemd did not answer)"

    with ThreadPoolExecutor(len(nodes)) as pool:
        results = list(pool.map(wait, nodes))
    details = []
    for (node, _), failure in zip(nodes, results, strict=True):
        if failure:
            console = paths(node.name).console
            tail = console.read_text(errors="replace").splitlines()[-15:] if console.exists() else []
            details.append(f"{node.name}: {failure}\n    console log tail:\n      " + "\n      ".join(tail))
    if details:
        die("a node did not boot:\n  " + "\n  ".join(details))


# ---------------------------------------------------------------- stop, for sure


@dataclass(frozen=True)
class Proc:
    pid: int
    comm: str


class ProcessTable(Protocol):
    """What stopping a node needs from the host (the unit tests pass a fake one)."""

    def members(self, cgroups: list[str]) -> list[Proc]:
        """The live processes (not zombies) in these cgroups and below."""

    def process(self, pid: int) -> Proc | None:
        """The process if it lives (not a zombie)."""

    def kill(self, pid: int) -> None:
        """SIGKILL; a process already gone is fine."""

    def link_exists(self, name: str) -> bool: ...

    def delete_link(self, name: str) -> None:
        """Delete a link; one already gone is fine."""


class HostProcesses:
    """The real process table: /proc, the cgroup files, sysfs and `ip link delete`."""

    def members(self, cgroups: list[str]) -> list[Proc]:
        found = (self.process(pid) for pid in sorted(host.cgroup_pids(Path(c) for c in cgroups)))
        return [p for p in found if p is not None and p.pid != os.getpid()]

    def process(self, pid: int) -> Proc | None:
        stat = host.proc_stat(pid)
        if stat is None:
            return None
        comm, fields = stat
        if fields[0] in ("Z", "X"):  # exited, only not reaped yet: nothing of it runs
            return None
        return Proc(pid, comm)

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def link_exists(self, name: str) -> bool:
        # sysfs, not `ip link`: no netlink lock, which a namespace being torn down may hold.
        return Path("/sys/class/net", name).exists()

    def delete_link(self, name: str) -> None:
        run(["ip", "link", "delete", name], check=False)


@dataclass(frozen=True)
class Remains:
    """What is left of a node: it is stopped when this is empty."""

    processes: tuple[Proc, ...]
    veth: str | None  # its name, while it exists

    def __bool__(self) -> bool:
        return bool(self.processes or self.veth)

    def describe(self) -> str:
        alive = ", ".join(f"{p.pid} ({p.comm})" for p in self.processes) or "none"
        veth = f"its veth {self.veth} still exists" if self.veth else "its veth is gone"
        return f"processes still alive: {alive}; {veth}"


def remains(name: str, record: NodeState, table: ProcessTable) -> Remains:
    procs = {p.pid: p for p in table.members(record.cgroups)}
    if record.pid and record.pid not in procs and pid_alive(record.pid, name):
        nspawn = table.process(record.pid)
        if nspawn:
            procs[nspawn.pid] = nspawn
    veth = veth_name(name)
    return Remains(tuple(procs[pid] for pid in sorted(procs)), veth if table.link_exists(veth) else None)


def reap(
    name: str,
    record: NodeState,
    table: ProcessTable,
    timeout: float = KILL_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """SIGKILL every process of the node and pull its veth, again and again, until
    nothing of it is left; fail with what still lives when `timeout` runs out."""
    deadline = clock() + timeout
    while True:
        left = remains(name, record, table)
        if not left:
            return
        if clock() >= deadline:
            pids = ",".join(str(p.pid) for p in left.processes)
            die(
                f"{name} did not stop within {timeout:.0f} s: {left.describe()}",
                hint=(f"see them with `ps -o pid,stat,wchan:32,cmd -p {pids}` (state D waits on the kernel); " if pids else "")
                + "then run the command again, or `labctl down`",
            )
        # Processes forked since the last look are in the cgroups too: each
        # round kills all that are there.
        for proc in left.processes:
            table.kill(proc.pid)
        # The plug goes with the power: the node's network namespace would drop
        # the veth only once all is dead, and later (a kernel work queue).
        if left.veth:
            table.delete_link(left.veth)
        sleep(POLL)


def kill(name: str, record: NodeState, graceful: bool, table: ProcessTable | None = None) -> None:
    """Stop a node: a clean poweroff first when graceful, then SIGKILL for whatever is left.

    Returns only when no process of the node lives and its veth is gone.
    """
    table = table or HostProcesses()
    pid = record.pid
    if graceful and pid and pid_alive(pid, name):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(pid, name) and time.monotonic() < deadline:
            time.sleep(POLL)
    reap(name, record, table)
    for cg in record.cgroups:
        host.remove_cgroup_tree(Path(cg))
