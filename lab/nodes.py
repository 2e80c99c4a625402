"""The lab's nodes: systemd-nspawn machines with systemd as PID 1.

Each node is an overlay of the cached image (its changes in an upper
directory of its own), booted by systemd-nspawn inside cgroups of its own,
attached to the lab bridge with its topology address.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import host, image
from .errors import LabError
from .inventory import write_lab_inventory
from .paths import KNOWN_HOSTS, NODES_DIR, SSH_DIR, SSH_KEY, STATE_DIR, STATE_FILE
from .topology import REPO_ROOT, Node, Topology

BRIDGE = "halab0"
BOOT_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0

Log = Callable[[str], None]


def machine_name(node: str) -> str:
    return f"halab-{node}"


def veth_name(node: str) -> str:
    # nspawn names the host side of a bridged veth "vb-" + machine name,
    # cut to the 15 characters an interface name may have.
    return ("vb-" + machine_name(node))[:15]


@dataclass
class NodePaths:
    base: Path

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def console(self) -> Path:
        return self.base / "console.log"

    @property
    def configured(self) -> Path:
        return self.base / "configured"


def paths(node: str) -> NodePaths:
    return NodePaths(NODES_DIR / node)


# ---------------------------------------------------------------- state


def load_state() -> dict[str, Any]:
    if STATE_FILE.exists():
        return dict(json.loads(STATE_FILE.read_text()))
    return {}


def save_state(state: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(STATE_FILE)


def pid_alive(pid: int | None, node: str) -> bool:
    """True when pid is the nspawn process of this node (pids get reused)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--machine=" + machine_name(node).encode() in cmdline


# ---------------------------------------------------------------- ssh


def ssh_command(address: str, command: list[str] | None = None, tty: bool = False, timeout: int = 5) -> list[str]:
    cmd = [
        "ssh",
        "-i",
        str(SSH_KEY),
        "-o",
        f"UserKnownHostsFile={KNOWN_HOSTS}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={timeout}",
        "-o",
        "LogLevel=ERROR",
    ]
    cmd += ["-t"] if tty else ["-T"]
    cmd.append(f"root@{address}")
    return cmd + (command or [])


def ssh_run(address: str, command: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ssh_command(address, command), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 255, "", f"timed out after {timeout:.0f}s")


def ensure_ssh_key() -> None:
    SSH_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not SSH_KEY.exists():
        host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "halab-lab", "-f", str(SSH_KEY)])


# ---------------------------------------------------------------- the lab


class Lab:
    def __init__(self, topo: Topology, log: Log = print) -> None:
        self.topo = topo
        self.log = log
        self.state = load_state()

    # -- up / down -----------------------------------------------------

    def up(self) -> None:
        host.preflight()
        if self.state and self.state.get("repo") not in (None, str(REPO_ROOT)):
            other = self.state["repo"]
            if any(pid_alive(n.get("pid"), name) for name, n in self.state.get("nodes", {}).items()):
                raise LabError(f"a lab started from {other} is running: run `labctl down` there first")
        if self.state and not self.all_running():
            self.log("found a lab that is not fully running (crash or partial start): cleaning up first")
            self.down(quiet=True)
        if self.state and self.all_running() and self.all_answer():
            changed = write_lab_inventory(self.topo, SSH_KEY, KNOWN_HOSTS)
            self.log("lab already up: nothing to do" + (" (inventory rewritten)" if changed else ""))
            return
        self.check_network_free()
        rootfs = image.ensure_image(self.log)
        self.state = {
            "repo": str(REPO_ROOT),
            "bridge": BRIDGE,
            "ip_forward_before": host.read_ip_forward(),
            "cgroup_parents": [str(p) for p in host.cgroup_layout()],
            "image": str(rootfs),
            "nodes": {},
        }
        save_state(self.state)
        host.create_bridge(self.topo, BRIDGE)
        host.enable_nat(self.topo, BRIDGE)
        host.write_ip_forward("1")
        ensure_ssh_key()
        for node in self.topo.nodes:
            self.prepare(node)
        self.write_known_hosts()
        for node in self.topo.nodes:
            self.boot(node)
        self.wait_ready([n.name for n in self.topo.nodes])
        write_lab_inventory(self.topo, SSH_KEY, KNOWN_HOSTS)
        self.log("lab is up: " + ", ".join(f"{n.name} {n.address}" for n in self.topo.nodes))

    def down(self, quiet: bool = False) -> None:
        if os.geteuid() != 0:
            raise LabError("labctl needs root: run it with sudo")
        state = self.state
        if not state and not STATE_DIR.exists() and not host.link_exists(BRIDGE):
            if not quiet:
                self.log("no lab here: nothing to do")
            return
        names = set(state.get("nodes", {})) | {n.name for n in self.topo.nodes}
        for name in sorted(names):
            self.kill_node(name, graceful=True)
        problems: list[str] = []
        for name in sorted(names):
            root = paths(name).root
            if root.exists() and host.mounted(root):
                res = host.run(["umount", str(root)], check=False)
                if res.returncode != 0:
                    problems.append(f"umount {root}: {res.stderr.strip()}")
        for parent in state.get("cgroup_parents", [str(p) for p in host.cgroup_layout()]):
            problems += host.remove_cgroup_tree(Path(parent))
        host.delete_link(state.get("bridge", BRIDGE))
        host.disable_nat()
        if "ip_forward_before" in state:
            host.write_ip_forward(state["ip_forward_before"])
        if not problems:
            shutil.rmtree(STATE_DIR, ignore_errors=True)
        self.state = {}
        if problems:
            raise LabError("the lab is down but some leftovers remain:\n  " + "\n  ".join(problems))
        if not quiet:
            self.log(f"lab is down; the node image stays cached in {image.image_dir().parent}")

    # -- checks --------------------------------------------------------

    def check_network_free(self) -> None:
        if host.link_exists(BRIDGE):
            raise LabError(
                f"a network interface named {BRIDGE} already exists and is not this lab's: remove it or stop what made it"
            )
        owner = host.address_owner(self.topo.gateway)
        if owner:
            raise LabError(f"address {self.topo.gateway} is already taken by {owner}: the lab needs it for its bridge")
        for node in self.topo.nodes:
            owner = host.address_owner(node.address)
            if owner:
                raise LabError(f"address {node.address} ({node.name}) is already taken by {owner}")

    def all_running(self) -> bool:
        nodes = self.state.get("nodes", {})
        return all(pid_alive(nodes.get(n.name, {}).get("pid"), n.name) for n in self.topo.nodes)

    def all_answer(self) -> bool:
        with ThreadPoolExecutor(len(self.topo.nodes)) as pool:
            results = list(pool.map(lambda n: ssh_run(n.address, ["true"], timeout=8).returncode == 0, self.topo.nodes))
        return all(results)

    # -- one node ------------------------------------------------------

    def prepare(self, node: Node) -> None:
        """Mount the node's overlay and give it its own identity (first time)."""
        p = paths(node.name)
        for d in (p.upper, p.work, p.root):
            d.mkdir(parents=True, exist_ok=True)
        if not host.mounted(p.root):
            host.run(
                [
                    "mount",
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    f"lowerdir={self.state['image']},upperdir={p.upper},workdir={p.work}",
                    str(p.root),
                ]
            )
        if p.configured.exists():
            return
        root = p.root
        (root / "etc/hostname").write_text(node.name + "\n")
        (root / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
        hosts = ["127.0.0.1 localhost", f"127.0.1.1 {node.name}.{self.topo.domain} {node.name}"]
        hosts += [f"{n.address} {n.name}.{self.topo.domain} {n.name}" for n in self.topo.nodes if n is not node]
        (root / "etc/hosts").write_text("\n".join(hosts) + "\n")
        (root / "etc/network/interfaces").write_text(
            "# Written by labctl from topology.yml\n"
            "auto lo\niface lo inet loopback\n\n"
            f"auto host0\niface host0 inet static\n"
            f"    address {node.address}/{self.topo.prefixlen}\n"
            f"    gateway {self.topo.gateway}\n"
        )
        host.run(["ssh-keygen", "-A", "-f", str(root)])
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(SSH_KEY.with_suffix(".pub").read_text())
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        p.configured.write_text("")

    def write_known_hosts(self) -> None:
        lines = []
        for node in self.topo.nodes:
            etc_ssh = paths(node.name).root / "etc/ssh"
            for pub in sorted(etc_ssh.glob("ssh_host_*_key.pub")):
                key = " ".join(pub.read_text().split()[:2])
                lines.append(f"{node.address},{node.name} {key}")
        KNOWN_HOSTS.write_text("\n".join(lines) + "\n")

    def boot(self, node: Node) -> None:
        p = paths(node.name)
        cgroups = host.make_node_cgroups(self.state["cgroup_parents"], node.name, node.memory_mb)
        cmd = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={p.root}",
            f"--machine={machine_name(node.name)}",
            f"--hostname={node.name}",
            # No host systemd to register with or to make a scope for us.
            "--register=no",
            "--keep-unit",
            f"--network-bridge={BRIDGE}",
            # SIGTERM to nspawn becomes a clean poweroff of the node's systemd.
            "--kill-signal=SIGRTMIN+3",
            "--console=read-only",
            image.INIT_PATH,
        ]
        with p.console.open("ab") as console:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: host.join_cgroups(cgroups),
            )
        self.state["nodes"][node.name] = {"pid": proc.pid, "cgroups": cgroups, "partitioned": False}
        save_state(self.state)

    def wait_ready(self, names: list[str]) -> None:
        def wait(name: str) -> str | None:
            node = self.topo.node(name)
            deadline = time.monotonic() + BOOT_TIMEOUT
            while time.monotonic() < deadline:
                if not pid_alive(self.state["nodes"][name]["pid"], name):
                    return f"{name}: its nspawn process exited during boot"
                res = ssh_run(node.address, ["systemctl", "is-system-running", "--wait"], timeout=60)
                if res.stdout.strip() in ("running", "degraded"):
                    return None
                time.sleep(1)
            return f"{name}: not up after {BOOT_TIMEOUT:.0f}s (ssh or systemd did not answer)"

        with ThreadPoolExecutor(len(names)) as pool:
            failures = [f for f in pool.map(wait, names) if f]
        if failures:
            details = []
            for failure in failures:
                name = failure.split(":", 1)[0]
                console = paths(name).console
                tail = console.read_text(errors="replace").splitlines()[-15:] if console.exists() else []
                details.append(failure + "\n    console log tail:\n      " + "\n      ".join(tail))
            raise LabError("a node did not boot:\n  " + "\n  ".join(details))

    def kill_node(self, name: str, graceful: bool) -> None:
        info = self.state.get("nodes", {}).get(name, {})
        pid = info.get("pid")
        if pid_alive(pid, name):
            os.kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
            deadline = time.monotonic() + (STOP_TIMEOUT if graceful else 10)
            while pid_alive(pid, name) and time.monotonic() < deadline:
                time.sleep(0.2)
            if pid_alive(pid, name):
                os.kill(pid, signal.SIGKILL)
                while pid_alive(pid, name):
                    time.sleep(0.2)
        # nspawn's own children may linger a moment after it exits.
        for cg in info.get("cgroups", []):
            self._wait_cgroup_empty(Path(cg))
            host.remove_cgroup_tree(Path(cg))
        if name in self.state.get("nodes", {}):
            self.state["nodes"][name]["pid"] = None
            save_state(self.state)

    @staticmethod
    def _wait_cgroup_empty(path: Path, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            procs = [p for p in path.rglob("cgroup.procs") if p.read_text().strip()] if path.is_dir() else []
            if not procs:
                return
            for proc_file in procs:
                for pid in proc_file.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.2)

    # -- fault verbs -----------------------------------------------------

    def require_up(self) -> None:
        if not self.state:
            raise LabError("no lab is up: run `labctl up` (or `make lab`) first")

    def stop(self, name: str, now: bool = False) -> None:
        self.require_up()
        self.topo.node(name)
        self.kill_node(name, graceful=not now)
        self.log(f"{name} is {'cut off (killed)' if now else 'powered off'}")

    def start(self, name: str) -> None:
        self.require_up()
        node = self.topo.node(name)
        if pid_alive(self.state["nodes"].get(name, {}).get("pid"), name):
            self.log(f"{name} is already running")
            return
        self.prepare(node)
        self.boot(node)
        self.wait_ready([name])
        self.log(f"{name} is up")

    def reboot(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def partition(self, name: str, cut: bool) -> None:
        self.require_up()
        self.topo.node(name)
        veth = veth_name(name)
        if not host.link_exists(veth):
            raise LabError(f"{name} has no network link ({veth}): is it running?")
        host.run(["ip", "link", "set", veth, "down" if cut else "up"])
        self.state["nodes"][name]["partitioned"] = cut
        save_state(self.state)
        self.log(f"{name} is {'cut off the network' if cut else 'back on the network'}")

    def status(self) -> list[dict[str, Any]]:
        rows = []
        nodes = self.state.get("nodes", {})
        for node in self.topo.nodes:
            info = nodes.get(node.name, {})
            alive = pid_alive(info.get("pid"), node.name)
            system = "-"
            if alive and not info.get("partitioned"):
                res = ssh_run(node.address, ["systemctl", "is-system-running"], timeout=5)
                system = res.stdout.strip() or "unreachable"
            rows.append(
                {
                    "node": node.name,
                    "address": node.address,
                    "groups": ",".join(node.groups),
                    "state": ("partitioned" if info.get("partitioned") else "running") if alive else "stopped",
                    "systemd": system,
                }
            )
        return rows
