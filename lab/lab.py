"""The lab as a whole: up, down, status, and the fault verbs on one node."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import host, image, node, state
from .errors import LabError, Log, die
from .inventory import write_lab_inventory
from .paths import KNOWN_HOSTS, SSH_KEY, STATE_DIR
from .run import run
from .ssh import ensure_key, remove_client_config, ssh_run, write_client_config, write_known_hosts
from .state import LabState, NodeState
from .topology import REPO_ROOT, Node, Topology

BRIDGE = "halab0"


@dataclass(frozen=True)
class StatusRow:
    node: str
    address: str
    groups: str
    state: str  # running, partitioned or stopped
    systemd: str  # systemctl is-system-running on the node, "-" when not asked


class Lab:
    def __init__(self, topo: Topology, log: Log = print) -> None:
        self.topo = topo
        self.log = log
        self.state: LabState | None = state.load()

    # -- up / down -----------------------------------------------------

    def up(self) -> None:
        host.preflight()
        current = self.state
        started_elsewhere = current is not None and current.repo not in (None, str(REPO_ROOT))
        if current and started_elsewhere and any(node.pid_alive(n.pid, name) for name, n in current.nodes.items()):
            die(f"a lab started from {current.repo} is running: run `labctl down` there first")
        if current and not self.all_running(current):
            self.log("found a lab that is not fully running (crash or partial start): cleaning up first")
            self.down(quiet=True)
        elif current and self.all_answer():
            changed = write_lab_inventory(self.topo, SSH_KEY, KNOWN_HOSTS) | write_client_config(self.topo.nodes)
            self.log("lab already up: nothing to do" + (" (inventory or ssh config rewritten)" if changed else ""))
            return
        self.check_network_free()
        rootfs = image.ensure_image(self.log)
        new = LabState(
            repo=str(REPO_ROOT),
            bridge=BRIDGE,
            ip_forward_before=host.read_ip_forward(),
            cgroup_parents=[str(p) for p in host.cgroup_layout()],
            image=str(rootfs),
        )
        self.state = new
        state.save(new)
        host.create_bridge(self.topo, BRIDGE)
        host.enable_nat(self.topo, BRIDGE)
        host.write_ip_forward("1")
        ensure_key()
        for n in self.topo.nodes:
            node.prepare(n, self.topo, new.image)
        write_known_hosts((n, node.paths(n.name).root / "etc/ssh") for n in self.topo.nodes)
        for n in self.topo.nodes:
            self.boot(new, n)
        node.wait_ready([(n, new.node(n.name)) for n in self.topo.nodes])
        write_lab_inventory(self.topo, SSH_KEY, KNOWN_HOSTS)
        write_client_config(self.topo.nodes)
        self.log("lab is up: " + ", ".join(f"{n.name} {n.address}" for n in self.topo.nodes))

    def down(self, quiet: bool = False) -> None:
        if os.geteuid() != 0:
            die("labctl needs root: run it with sudo")
        current = self.state or LabState()
        remove_client_config()
        if self.state is None and not STATE_DIR.exists() and not host.link_exists(BRIDGE):
            if not quiet:
                self.log("no lab here: nothing to do")
            return
        names = sorted(set(current.nodes) | {n.name for n in self.topo.nodes})
        problems: list[str] = []
        for name in names:
            try:
                self.kill_node(current, name, graceful=True)
            except LabError as exc:  # take the rest down all the same, then say what lives on
                problems.append(str(exc))
        for name in names:
            root = node.paths(name).root
            if root.exists() and host.mounted(root):
                res = run(["umount", str(root)], check=False)
                if res.returncode != 0:
                    problems.append(f"umount {root}: {res.stderr.strip()}")
        for parent in self.cgroup_parents(current):
            problems += host.remove_cgroup_tree(Path(parent))
        host.delete_link(current.bridge or BRIDGE)
        host.disable_nat()
        if current.ip_forward_before is not None:
            host.write_ip_forward(current.ip_forward_before)
        if not problems:
            shutil.rmtree(STATE_DIR, ignore_errors=True)
        self.state = None
        if problems:
            die("the lab is down but some leftovers remain:\n  " + "\n  ".join(problems))
        if not quiet:
            self.log(f"lab is down; the node image stays cached in {image.image_dir().parent}")

    # -- checks --------------------------------------------------------

    def check_network_free(self) -> None:
        if host.link_exists(BRIDGE):
            die(f"a network interface named {BRIDGE} already exists and is not this lab's: remove it or stop what made it")
        owner = host.address_owner(self.topo.gateway)
        if owner:
            die(f"address {self.topo.gateway} is already taken by {owner}: the lab needs it for its bridge")
        for n in self.topo.nodes:
            owner = host.address_owner(n.address)
            if owner:
                die(f"address {n.address} ({n.name}) is already taken by {owner}")

    def all_running(self, current: LabState) -> bool:
        return all(node.pid_alive(current.node(n.name).pid, n.name) for n in self.topo.nodes)

    def all_answer(self) -> bool:
        with ThreadPoolExecutor(len(self.topo.nodes)) as pool:
            results = list(pool.map(lambda n: ssh_run(n.address, ["true"], timeout=8).returncode == 0, self.topo.nodes))
        return all(results)

    def require_up(self) -> LabState:
        if not self.state:
            die("no lab is up: run `labctl up` (or `make lab`) first")
        return self.state

    @staticmethod
    def cgroup_parents(current: LabState) -> list[str]:
        if current.cgroup_parents is not None:
            return current.cgroup_parents
        return [str(p) for p in host.cgroup_layout()]

    # -- one node ------------------------------------------------------

    def boot(self, current: LabState, n: Node) -> None:
        current.nodes[n.name] = node.boot(n, self.cgroup_parents(current), current.bridge or BRIDGE)
        state.save(current)

    def kill_node(self, current: LabState, name: str, graceful: bool) -> None:
        """Stop a node; returns only once nothing of it is left (node.kill fails loudly otherwise)."""
        record = current.node(name)
        if not record.cgroups:  # never booted, or booted by a start that crashed before saving
            record = NodeState(record.pid, [str(Path(p) / name) for p in self.cgroup_parents(current)], record.partitioned)
        node.kill(name, record, graceful)
        if name in current.nodes:
            current.nodes[name].pid = None
            state.save(current)

    # -- fault verbs -----------------------------------------------------

    def stop(self, name: str, now: bool = False) -> None:
        current = self.require_up()
        self.topo.node(name)
        self.kill_node(current, name, graceful=not now)
        self.log(f"{name} is {'cut off (killed)' if now else 'powered off'}")

    def start(self, name: str) -> None:
        current = self.require_up()
        n = self.topo.node(name)
        if node.pid_alive(current.node(name).pid, name):
            self.log(f"{name} is already running")
            return
        # Whatever a crash or a failed stop left of it (processes, its veth)
        # would keep the new nspawn from starting.
        self.kill_node(current, name, graceful=False)
        node.prepare(n, self.topo, current.image)
        self.boot(current, n)
        node.wait_ready([(n, current.node(name))])
        self.log(f"{name} is up")

    def reboot(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def partition(self, name: str, cut: bool) -> None:
        current = self.require_up()
        self.topo.node(name)
        veth = node.veth_name(name)
        if not host.link_exists(veth):
            die(f"{name} has no network link ({veth}): is it running?")
        run(["ip", "link", "set", veth, "down" if cut else "up"])
        current.nodes[name].partitioned = cut
        state.save(current)
        self.log(f"{name} is {'cut off the network' if cut else 'back on the network'}")

    @staticmethod
    def _inside(record: NodeState, name: str, command: list[str]) -> list[str] | None:
        """The command that runs `command` in node `name` through its namespaces, not its
        network (node.console_command); None when the node does not run."""
        leader = node.leader_pid(record.pid) if record.pid and node.pid_alive(record.pid, name) else None
        return node.console_command(leader, command) if leader else None

    def console(self, name: str, command: list[str]) -> list[str]:
        """The command that runs `command` in a running node without its network."""
        current = self.require_up()
        self.topo.node(name)
        inside = self._inside(current.node(name), name, command)
        if inside is None:
            die(f"{name} is not running", hint=f"lab/labctl start {name}")
        return inside

    def is_partitioned(self, name: str) -> bool:
        return bool(self.state and self.state.node(name).partitioned)

    def status(self) -> list[StatusRow]:
        current = self.state or LabState()
        rows = []
        for n in self.topo.nodes:
            record = current.node(n.name)
            alive = node.pid_alive(record.pid, n.name)
            system = "-"
            if alive and not record.partitioned:
                res = ssh_run(n.address, ["systemctl", "is-system-running"], timeout=5)
                system = res.stdout.strip() or "unreachable"
            elif alive:  # cut off: ask it through its namespaces, as a console would
                cmd = self._inside(record, n.name, ["systemctl", "is-system-running"]) or ["false"]
                system = run(cmd, check=False).stdout.strip() or "unknown"
            running = "partitioned" if record.partitioned else "running"
            rows.append(StatusRow(n.name, n.address, ",".join(n.groups), running if alive else "stopped", system))
        return rows
