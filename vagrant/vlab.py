"""vlab: halab's VMs (the nodes of topology.yml, five VMs by its `compact` placement unless
HALAB_VAGRANT_NODES=all) with the project's own Vagrantfile, on vagrant-libvirt driving qemu
WITHOUT KVM, on a host that has no systemd as PID 1.

Everything libvirt creates (bridges, dnsmasq, its firewall rules, the VMs'
private network from topology.yml) lives in a network namespace of its own,
so it never meets the nspawn lab's bridge (topology.yml's gateway on the
host). One veth pair links that namespace to the host; the host masquerades
it. The host plumbing (nft tables, ip_forward, namespaces, apt) is lab/host.py's.

    vagrant/vlab deps          apt-get install what is missing
    vagrant/vlab plumbing      namespace, uplink + NAT, virtlogd/libvirtd (idempotent)
    vagrant/vlab net           namespace, uplink + NAT only (plumbing without libvirt)
    vagrant/vlab box           build the local box if its recipe changed, add it to Vagrant
    vagrant/vlab up [ARGS]     plumbing + box + `vagrant up --provider=libvirt ARGS`
    vagrant/vlab provision     run the Ansible provisioner again (vagrant provision)
    vagrant/vlab vagrant ARGS  any vagrant command, in the namespace, with the lab's env
    vagrant/vlab exec CMD      any command in the namespace, with the lab's env
    vagrant/vlab status        what is running
    vagrant/vlab down          destroy the VMs, stop libvirt, remove namespace/veth/NAT

Exit status: 0; 1 for an error vlab explains; 2 for a bad command line; the
command's own status when `vagrant`, `exec`, `up`, `provision` or `deps` runs
one that fails.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import yaml

from lab import host, topology
from lab.errors import LabError, die
from lab.lab import BRIDGE as NSPAWN_BRIDGE
from lab.run import run
from lab.topology import REPO_ROOT, Topology

from . import build_box

NS = "halab-vagrant"
STATE = Path("/var/lib/halab-vagrant")  # readable by libvirt's qemu user (not /root)
VAGRANT_HOME = STATE / "vagrant.d"
IP_FORWARD_SAVED = STATE / "ip_forward.orig"  # the host's value before vlab, put back by `down`
BOX_KEY_FILE = VAGRANT_HOME / "halab-box.key"  # the recipe key of the box added to Vagrant
NFT_TABLE = "halab_vagrant"  # ours, on the host and in the namespace; the nspawn lab's is host.NFT_TABLE
BOX = build_box.BOX_NAME
LIBVIRT_IMAGES = Path("/var/lib/libvirt/images")
POOL_VOLUMES = BOX.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_*"  # libvirt's copies of the box
NICE = 10
# vagrant-libvirt's management network (its default 192.168.121.0/24), in the
# namespace: the controller's SSH reaches the VMs from its gateway.
MGMT_GATEWAY = str(ipaddress.IPv4Network("192.168.121.0/24")[1])
RUN_DIR = Path("/run")  # the daemons' pid files, libvirt's runtime state
DAEMONS = ("virtlogd", "libvirtd")  # started in this order, stopped in the other
VIRSH = ["virsh", "-c", "qemu:///system"]
ANSIBLE_STRATEGY = "mitogen_linear"  # unless ANSIBLE_STRATEGY is set (see lab_env)
HOST_VARS_DIR = REPO_ROOT / ".vagrant/provisioners/ansible/inventory/host_vars"
# Which nodes become VMs: "compact" (topology.yml's `compact` placement: five VMs for seven
# nodes) or "all" (one VM per node). Seven emulated VMs on two cores did not fit CI's budget
# (vagrant/README.md).
PLACEMENT_VARIABLE = "HALAB_VAGRANT_NODES"
PLACEMENTS = ("compact", "all")
PACKAGES = (
    "vagrant", "vagrant-libvirt", "libvirt-daemon-system", "qemu-system-x86", "qemu-utils", "dnsmasq-base",
    "mmdebstrap", "e2fsprogs", "nftables", "iproute2", "openssh-client",
)  # fmt: skip
NET_PACKAGES = ("nftables", "iproute2")  # all `net` needs


@dataclass(frozen=True)
class Uplink:
    """The veth pair between the host and the namespace, on a /30 of its own."""

    host_if: str = "hvag0"  # host end
    ns_if: str = "hvag1"  # namespace end
    network: ipaddress.IPv4Network = field(default=ipaddress.IPv4Network("172.30.56.0/30"))

    @property
    def host_ip(self) -> str:
        return str(self.network[1])

    @property
    def ns_ip(self) -> str:
        return str(self.network[2])


UPLINK = Uplink()


def say(message: str) -> None:
    print(f"vlab: {message}", flush=True)


class Exit(Exception):
    """Leave vlab with this status: a command it ran failed and said why on the terminal."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def status_of(returncode: int) -> int:
    """A shell's exit status for a child's return code (killed by signal N: 128 + N)."""
    return returncode if returncode >= 0 else 128 - returncode


def passthrough(cmd: Sequence[str], check: bool = True) -> int:
    """Run cmd on the terminal (its output is for the user); with check, its failure is vlab's exit status.

    lab.run.run keeps a command's output to quote it in an error; vagrant,
    apt and the tests speak for themselves, for minutes.
    """
    sys.stdout.flush()
    code = status_of(subprocess.run(list(cmd), check=False).returncode)
    if check and code != 0:
        raise Exit(code)
    return code


# `vagrant up` once created every domain and then waited forever, none of them started and
# nothing printed (its Ruby threads parked on futexes; a fresh machine, stop 26): a run that
# is silent this long while no domain runs is that hang, not a slow boot (a booting VM runs).
STALL_S = 300.0


def running_domains() -> list[str]:
    out = run([*VIRSH, "list", "--state-running", "--name"], check=False).stdout
    return [line for line in out.split() if line]


def passthrough_watched(
    cmd: Sequence[str],
    stall_s: float = STALL_S,
    busy: Callable[[], bool] = lambda: bool(running_domains()),
    poll_s: float = 10.0,
) -> int | None:
    """passthrough(), but None if the command stalled (silent for stall_s while not busy:
    no domain running), after stopping it."""
    sys.stdout.flush()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    last_output = [time.monotonic()]

    def relay(fd: int) -> None:
        for chunk in iter(lambda: os.read(fd, 4096), b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            last_output[0] = time.monotonic()

    reader = threading.Thread(target=relay, args=(proc.stdout.fileno(),), daemon=True)
    reader.start()
    while proc.poll() is None:
        time.sleep(poll_s)
        silent = time.monotonic() - last_output[0]
        if silent > stall_s and proc.poll() is None and not busy():
            say(f"{cmd[0]} printed nothing for {silent:.0f} s and no domain runs: stalled, stopping it")
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(5)
            return None
    reader.join(5)
    return status_of(proc.returncode)


def replace_process(cmd: Sequence[str]) -> NoReturn:
    """Become cmd (its terminal, its signals, its exit status)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], list(cmd))


# ---------------------------------------------------------------- pure parts


def host_ruleset(up: Uplink = UPLINK) -> str:
    """On the host: masquerade the uplink out of any other interface."""
    # Workplace rule: VMs reach the package registries, not the world's NTP pool.
    ntp_drop = f'iifname "{up.host_if}" udp dport 123 drop'
    return host.masquerade_ruleset(NFT_TABLE, str(up.network), up.host_if, forward_first=[ntp_drop])


def namespace_ruleset(up: Uplink = UPLINK) -> str:
    """Inside the namespace: VM traffic leaves with the uplink's address, whatever
    libvirt's own NAT does, so the host only ever sees the uplink's /30."""
    return host.nft_table(NFT_TABLE, {"postrouting": (host.NAT_POSTROUTING, [f'oifname "{up.ns_if}" masquerade'])})


# ANSIBLE_STRATEGY: Mitogen (plugins/strategy) keeps one Python per VM instead
# of starting one, and importing Ansible's module_utils, for every task: under
# TCG that start-up was most of a task's 30-50 s. Override it to compare.
def model_file(repo: Path | None = None) -> Path:
    """The compacted model the VMs were made from (written by `up`, removed by `down`); absent: topology.yml."""
    return (repo or REPO_ROOT) / ".vagrant/halab-topology.yml"


def lab_model() -> Path:
    """The model this lab's VMs follow."""
    return model_file() if model_file().is_file() else topology.TOPOLOGY_FILE


def lab_env(environ: Mapping[str, str], repo: Path = REPO_ROOT) -> dict[str, str]:
    """The lab's environment for vagrant, Ansible and the tests (HALAB_TOPOLOGY: the VMs' model, if compacted)."""
    model = {"HALAB_TOPOLOGY": str(model_file(repo))} if model_file(repo).is_file() else {}
    return {
        **model,
        "VAGRANT_HOME": str(VAGRANT_HOME),
        "HALAB_BOX": BOX,
        "HALAB_LIBVIRT_DRIVER": "qemu",
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        "HALAB_VAGRANT": "1",
        "ANSIBLE_CONFIG": str(repo / "ansible.cfg"),
        "ANSIBLE_STRATEGY": environ.get("ANSIBLE_STRATEGY") or ANSIBLE_STRATEGY,
        "PATH": f"{repo / '.venv/bin'}:{environ.get('PATH', '')}",
    }


def in_lab(cmd: Sequence[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """cmd in the namespace, with the lab's environment (run it from the repository)."""
    return host.in_netns(NS, ["env", *(f"{k}={v}" for k, v in lab_env(environ).items()), *cmd])


# What only this lab needs, as host variables in a host_vars/ directory beside
# Vagrant's generated inventory (Ansible reads it with that inventory, and so do
# testinfra and ad-hoc commands, which get no --become from Vagrant):
# - ansible_become: Vagrant logs in as `vagrant`, the roles and checks need root;
# - common_firewall_controller_addresses: the role's default reads SSH_CLIENT
#   from ansible_env, which sudo (become) does not keep. The controller (vagrant,
#   Ansible, the tests) reaches the VMs over SSH from the management network's
#   gateway and over HTTP (NGINX, Prometheus) from the private network's, which
#   libvirt gives the address topology.yml names as the gateway;
# - ansible_timeout: Mitogen's connection includes starting and compiling its
#   own code in the VM (and again behind sudo), minutes for five busy VMs on two
#   emulated cores. Vagrant passes --timeout=30, which beats ANSIBLE_TIMEOUT but
#   not a host variable; with 30 s the second provisioning found VMs unreachable;
# - ansible_python_interpreter: the box has /usr/bin/python3; interpreter
#   discovery under Mitogen tries up to 8 candidates, each a fresh connection
#   with its own timeout (8 x 30 s = the 4 minutes those failures took);
# - todo_api_timeout_start_sec: an instance restarted after an OOM kill while its
#   peer VM carried the load took over 90 s (the role's default) to be ready on
#   emulated cores; systemd killed that start and began again.
def host_vars(topo: Topology, mgmt_gateway: str = MGMT_GATEWAY) -> dict[str, str]:
    """Each node's host_vars file: name -> its text."""
    text = "# Written by vagrant/vlab (see write_host_vars there)\nansible_become: true\n"
    text += "ansible_timeout: 600\nansible_python_interpreter: /usr/bin/python3\n"
    text += "todo_api_timeout_start_sec: 300\n"
    text += f"common_firewall_controller_addresses: [{mgmt_gateway}, {topo.gateway}]\n"
    return {node.name: text for node in topo.nodes}


def write_host_vars(directory: Path = HOST_VARS_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in host_vars(topology.load(lab_model())).items():
        (directory / f"{name}.yml").write_text(text)


def machine_states(vagrant_status: str) -> list[str]:
    """The machine lines of `vagrant status`: after "Current machine states:", up to the blank line after them."""
    lines: list[str] = []
    started = False
    for line in vagrant_status.splitlines():
        if line.startswith("Current"):
            started = True
        elif started and line.strip():
            lines.append(line)
        elif started and lines:
            break
    return lines


# ---------------------------------------------------------------- the daemons


def pid_file_holder(daemon: str) -> int | None:
    """The live process named `daemon` whose pid its pid file holds."""
    try:
        pid = int((RUN_DIR / f"{daemon}.pid").read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text()
    except (OSError, ValueError):
        return None
    return pid if daemon in comm else None


def daemon_pid(daemon: str) -> int | None:
    """The pid of `daemon` (virtlogd, libvirtd) if it runs in OUR namespace."""
    pid = pid_file_holder(daemon)
    return pid if pid is not None and host.netns_of_pid(pid) == NS else None


def foreign_daemon(daemon: str) -> int | None:
    """The pid of a `daemon` that is NOT ours and holds its pid file."""
    pid = pid_file_holder(daemon)
    return pid if pid is not None and host.netns_of_pid(pid) != NS else None


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def start_daemons() -> None:
    for daemon in DAEMONS:
        if daemon_pid(daemon):
            continue
        foreign = foreign_daemon(daemon)
        if foreign:
            die(f"a {daemon} outside namespace {NS} is running (pid {foreign}): stop it first")
        (RUN_DIR / f"{daemon}.pid").unlink(missing_ok=True)
        say(f"starting {daemon} (in {NS}, nice {NICE})")
        passthrough(host.in_netns(NS, ["nice", "-n", str(NICE), daemon, "-d"]))
    for _ in range(50):
        if run([*VIRSH, "version"], check=False).returncode == 0:
            return
        time.sleep(0.2)
    die(f"libvirtd did not answer on {RUN_DIR}/libvirt/libvirt-sock", hint="see /var/log/libvirt/")


def stop_daemons() -> None:
    for daemon in reversed(DAEMONS):
        pid = daemon_pid(daemon)
        if pid is None:
            continue
        say(f"stopping {daemon} (pid {pid})")
        signal_pid(pid, signal.SIGTERM)
        for _ in range(50):
            if not alive(pid):
                break
            time.sleep(0.2)
        if alive(pid):
            signal_pid(pid, signal.SIGKILL)
        (RUN_DIR / f"{daemon}.pid").unlink(missing_ok=True)


def signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone meanwhile: what we wanted
        os.kill(pid, sig)


def kill_qemu_of_ns() -> None:
    """qemu processes left in our namespace (libvirtd killed hard)."""
    if not host.netns_exists(NS):
        return
    for pid in host.netns_pids(NS):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            continue
        if "qemu" in comm:
            say(f"killing leftover qemu pid {pid}")
            signal_pid(pid, signal.SIGTERM)


# ---------------------------------------------------------------- the verbs


def need_root() -> None:
    if os.geteuid() != 0:
        die("run as root (network namespaces, libvirtd)")


def check_packages(packages: Sequence[str]) -> None:
    missing = " ".join(host.missing_packages(packages))
    if missing:
        die(f"missing packages: {missing}", hint=f"run: make vagrant-deps, or apt-get install {missing}")


def deps(_: Args) -> None:
    need_root()
    missing = host.missing_packages(PACKAGES)
    if missing:
        say("installing: " + " ".join(missing))
        # libvirtd must not start on the host: vlab starts it inside the namespace.
        code = host.apt_install(missing)
        if code:
            raise Exit(code)


def check_uplink_free(up: Uplink = UPLINK) -> None:
    """Our /30 must not already be in use on the host (other than by our veth), nor be the VMs' network."""
    vms = topology.load().network
    if up.network.overlaps(vms):
        die(f"the uplink's {up.network} overlaps the VMs' {vms} (topology.yml)", hint=f"change Uplink.network in {__file__}")
    net = str(up.network)
    lines = run(["ip", "-o", "addr", "show", "to", net]).stdout.splitlines()
    lines += run(["ip", "-o", "route", "show", "root", net]).stdout.splitlines()
    used = [line for line in lines if up.host_if not in line]
    if used:
        die(f"{net} is already used on this host ({'; '.join(used)})", hint=f"change Uplink.network in {__file__}")


def network(up: Uplink = UPLINK) -> None:
    """The namespace, its uplink, NAT on both sides, ip_forward (idempotent)."""
    STATE.mkdir(parents=True, exist_ok=True)
    STATE.chmod(0o755)
    if not host.netns_exists(NS):
        say(f"creating namespace {NS}")
        run(["ip", "netns", "add", NS])
    run(host.in_netns(NS, ["ip", "link", "set", "lo", "up"]))
    if not host.link_exists(up.host_if):
        say(f"uplink {up.host_if} ({up.host_ip}) <-> {NS}/{up.ns_if} ({up.ns_ip})")
        host.create_veth(up.host_if, up.ns_if, NS)
    host.set_address(up.host_if, up.host_ip, up.network.prefixlen)
    host.set_address(up.ns_if, up.ns_ip, up.network.prefixlen, netns=NS)
    run(host.in_netns(NS, ["ip", "route", "replace", "default", "via", up.host_ip]))
    run(host.in_netns(NS, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
    host.replace_nft_table(NFT_TABLE, namespace_ruleset(up), netns=NS)
    host.save_ip_forward(IP_FORWARD_SAVED)
    host.write_ip_forward("1")
    host.replace_nft_table(NFT_TABLE, host_ruleset(up))


def net(_: Args) -> None:
    need_root()
    check_packages(NET_PACKAGES)
    check_uplink_free()
    network()


def plumbing(_: Args) -> None:
    need_root()
    check_packages(PACKAGES)
    check_uplink_free()
    for directory in (STATE, VAGRANT_HOME):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    network()
    start_daemons()


def box_listed() -> bool:
    out = run(["vagrant", "box", "list"], check=False).stdout
    return any(line.startswith(BOX + " ") for line in out.splitlines())


def box(_: Args) -> None:
    need_root()
    check_packages(PACKAGES)
    VAGRANT_HOME.mkdir(parents=True, exist_ok=True)
    for directory in (STATE, VAGRANT_HOME):
        directory.chmod(0o755)
    boxes = build_box.cache()
    if not boxes.complete():
        build_box.build(boxes)
    file, key = boxes.dir / build_box.BOX_FILE, boxes.key
    added = BOX_KEY_FILE.read_text().strip() if BOX_KEY_FILE.exists() else ""
    listed = box_listed()
    if added == key and listed:
        say(f"box {BOX} ({key}) already added")
        return
    if listed:
        say(f"replacing box {BOX} (was {added or 'unknown'}, now {key})")
        run(["vagrant", "box", "remove", "--force", "--all", BOX])
    # libvirt keeps its own copy of the box image in its pool: drop a stale one.
    for volume in sorted(LIBVIRT_IMAGES.glob(POOL_VOLUMES)):
        if daemon_pid("libvirtd") and run([*VIRSH, "vol-delete", "--pool", "default", volume.name], check=False).returncode == 0:
            continue
        volume.unlink(missing_ok=True)
    say(f"adding box {BOX} from {file}")
    passthrough(["vagrant", "box", "add", "--force", "--name", BOX, str(file)])
    BOX_KEY_FILE.write_text(key + "\n")


def created_machines(repo: Path | None = None) -> list[str]:
    """The machines of this clone that Vagrant has created (a libvirt domain id recorded)."""
    return sorted(p.parent.parent.name for p in ((repo or REPO_ROOT) / ".vagrant/machines").glob("*/libvirt/id"))


def place_nodes(environ: Mapping[str, str]) -> None:
    """Write (compact) or remove (all) the VMs' model, as PLACEMENT_VARIABLE asks; never under existing VMs."""
    wanted = environ.get(PLACEMENT_VARIABLE) or PLACEMENTS[0]
    if wanted not in PLACEMENTS:
        die(f"{PLACEMENT_VARIABLE}={wanted!r}: expected one of {', '.join(PLACEMENTS)}")
    current = "compact" if model_file().is_file() else "all"
    machines = created_machines()
    if machines and wanted != current:
        die(f"the VMs ({', '.join(machines)}) were made with {PLACEMENT_VARIABLE}={current}", hint="vagrant/vlab down first")
    if wanted == "all":
        model_file().unlink(missing_ok=True)
        return
    model = topology.compacted(yaml.safe_load(topology.TOPOLOGY_FILE.read_text()))
    model_file().parent.mkdir(parents=True, exist_ok=True)
    model_file().write_text(
        f"# Written by vagrant/vlab from {topology.TOPOLOGY_FILE.name} with its `compact` placement: do not edit.\n"
        + yaml.safe_dump(model, sort_keys=False)
    )
    topology.load(model_file())  # the result is a valid model
    say(
        f"{len(model['nodes'])} VMs for the nodes of {topology.TOPOLOGY_FILE.name} ({PLACEMENT_VARIABLE}=compact): "
        + ", ".join(f"{n} ({' '.join(spec['groups'])})" for n, spec in model["nodes"].items())
    )


def up(args: Args) -> None:
    plumbing(args)
    box(args)
    if not os.access(REPO_ROOT / ".venv/bin/ansible-playbook", os.X_OK):
        die("no .venv/bin/ansible-playbook: run make venv first")
    place_nodes(os.environ)
    write_host_vars()
    started = time.monotonic()
    # Boot them all in parallel, then provision once, all of them together:
    # with a parallel provider, a plain `vagrant up` starts the Ansible
    # provisioner (attached to the last machine) while the others may still boot.
    # A stalled `vagrant up` (see STALL_S) is stopped, its domains destroyed, and it is run
    # once more. Not destroyed, they were started by the second run without their hostname
    # or private network (vagrant-libvirt configures those only for a domain it creates):
    # every VM came up as halab-box with eth1 down and Redis failed to bind its address.
    for attempt in (1, 2):
        code = passthrough_watched(in_lab(["vagrant", "up", "--provider=libvirt", "--no-provision", *args.args]))
        if code is not None:
            if code != 0:
                raise Exit(code)
            break
        if attempt == 2:
            die("vagrant up stalled twice (see above)")
        say("destroying what it created, then running vagrant up again")
        passthrough(in_lab(["vagrant", "destroy", "--force"]))
    booted = time.monotonic()
    say(f"vagrant up --no-provision took {booted - started:.0f} s")
    write_host_vars()  # again: `vagrant up` may have rewritten the inventory directory
    passthrough(in_lab(["vagrant", "provision"]))
    now = time.monotonic()
    say(f"vagrant provision took {now - booted:.0f} s; up + provision {now - started:.0f} s")


def provision(_: Args) -> None:
    need_root()
    if not daemon_pid("libvirtd"):
        die("the plumbing is down: run vagrant/vlab up")
    write_host_vars()
    started = time.monotonic()
    passthrough(in_lab(["vagrant", "provision"]))
    say(f"vagrant provision took {time.monotonic() - started:.0f} s")


def vagrant(args: Args) -> None:
    need_root()
    if not daemon_pid("libvirtd"):
        die("the plumbing is down: run vagrant/vlab plumbing")
    replace_process(in_lab(["vagrant", *args.args]))


def exec_in_ns(args: Args) -> None:
    need_root()
    if not host.netns_exists(NS):
        die(f"namespace {NS} absent: run vagrant/vlab plumbing")
    replace_process(in_lab(args.args))


def present(yes: bool) -> str:
    return "present" if yes else "absent"


def status(_: Args) -> None:
    print(f"namespace {NS}: {present(host.netns_exists(NS))}")
    print(f"model: {lab_model()}")
    print(f"uplink {UPLINK.host_if}: {present(host.link_exists(UPLINK.host_if))}")
    print(f"nft table ip {NFT_TABLE} (host): {present(host.nft_table_present(NFT_TABLE))}")
    for daemon in DAEMONS:
        print(f"{daemon}: {daemon_pid(daemon) or 'not running'}")
    if daemon_pid("libvirtd"):
        passthrough([*VIRSH, "list", "--all"])
        for line in machine_states(run(in_lab(["vagrant", "status"]), check=False).stdout):
            print(line)


def down(_: Args) -> None:
    need_root()
    if daemon_pid("libvirtd"):
        say("destroying the VMs")
        if passthrough(in_lab(["vagrant", "destroy", "-f"]), check=False) != 0:
            say("vagrant destroy failed; removing leftovers with virsh")
        # Whatever Vagrant lost track of: every domain and non-default network of OUR libvirtd.
        for domain in run([*VIRSH, "list", "--all", "--name"], check=False).stdout.split():
            run([*VIRSH, "destroy", domain], check=False)
            run([*VIRSH, "undefine", domain, "--remove-all-storage"], check=False)
        for net_name in run([*VIRSH, "net-list", "--all", "--name"], check=False).stdout.split():
            if net_name != "default":
                run([*VIRSH, "net-destroy", net_name], check=False)
                run([*VIRSH, "net-undefine", net_name], check=False)
    elif (REPO_ROOT / ".vagrant/machines").is_dir():
        # libvirtd is not running, so its VMs cannot be either (qemu runs as its child).
        kill_qemu_of_ns()
    stop_daemons()
    kill_qemu_of_ns()
    # libvirtd's runtime state (pid files, network status): nothing runs any more.
    if not daemon_pid("libvirtd") and not foreign_daemon("libvirtd"):
        shutil.rmtree(RUN_DIR / "libvirt", ignore_errors=True)
    if host.netns_exists(NS):
        say(f"deleting namespace {NS} (and the uplink with it)")
        run(["ip", "netns", "delete", NS])
    host.delete_link(UPLINK.host_if)
    host.delete_nft_table(NFT_TABLE)
    model_file().unlink(missing_ok=True)  # only now: `vagrant destroy` above needed it
    keeper = host.restore_ip_forward(IP_FORWARD_SAVED, needed_by=[NSPAWN_BRIDGE])
    if keeper:
        say(f"leaving ip_forward=1: the nspawn lab ({keeper}) is up and needs it")
    say(f"down. Kept (caches): the box in {build_box.CACHE}, Vagrant's copy in {VAGRANT_HOME},")
    say(f"  libvirt's copy of its image in {LIBVIRT_IMAGES} ({POOL_VOLUMES}) and its storage pool definition.")


# ---------------------------------------------------------------- command line


class Verb(enum.Enum):
    deps = "deps"
    plumbing = "plumbing"
    net = "net"
    box = "box"
    up = "up"
    provision = "provision"
    vagrant = "vagrant"
    exec = "exec"
    status = "status"
    down = "down"

    @property
    def help(self) -> str:
        return HELP[self]

    @property
    def passes_args(self) -> bool:
        """Its arguments go, untouched, to the command it runs."""
        return self in (Verb.up, Verb.vagrant, Verb.exec)


HELP = {
    Verb.deps: "apt-get install what is missing",
    Verb.plumbing: "namespace, uplink + NAT, virtlogd/libvirtd (idempotent)",
    Verb.net: "namespace, uplink + NAT only (plumbing without libvirt; `down` removes it)",
    Verb.box: "build the local box if its recipe changed, add it to Vagrant",
    Verb.up: "plumbing + box + `vagrant up --provider=libvirt ARGS`, then `vagrant provision`",
    Verb.provision: "run the Ansible provisioner again (vagrant provision)",
    Verb.vagrant: "any vagrant command, in the namespace, with the lab's env",
    Verb.exec: "any command in the namespace, with the lab's env",
    Verb.status: "what is running",
    Verb.down: "destroy the VMs, stop libvirt, remove namespace/veth/NAT",
}
ARGS_HELP = {
    Verb.up: "arguments for `vagrant up` (machine names ...)",
    Verb.vagrant: "the vagrant command and its arguments",
    Verb.exec: "the command and its arguments",
}


@dataclass(frozen=True)
class Args:
    verb: Verb
    args: list[str] = field(default_factory=list)  # up, vagrant, exec: passed on as they are


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vagrant/vlab",
        description="halab's VMs (the nodes of topology.yml; HALAB_VAGRANT_NODES=compact, the default, or all) "
        f"with vagrant-libvirt on qemu without KVM, in network namespace {NS}",
        epilog="The arguments of up, vagrant and exec are passed on as they are (only a first -h/--help is vlab's).",
    )
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in Verb:
        v = sub.add_parser(verb.value, help=verb.help, description=verb.help)
        if verb.passes_args:
            v.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help=ARGS_HELP[verb])
    return p


def parse(argv: Sequence[str] | None = None) -> Args:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after up/vagrant/exec belongs to the command (options, `--` and
    # all), which argparse would otherwise read as its own.
    if argv and argv[0] in {v.value for v in Verb if v.passes_args} and argv[1:2] not in (["-h"], ["--help"]):
        return Args(Verb(argv[0]), argv[1:])
    ns = parser().parse_args(argv)
    return Args(Verb(ns.verb), list(getattr(ns, "args", None) or []))


VERBS: dict[Verb, Callable[[Args], None]] = {
    Verb.deps: deps,
    Verb.plumbing: plumbing,
    Verb.net: net,
    Verb.box: box,
    Verb.up: up,
    Verb.provision: provision,
    Verb.vagrant: vagrant,
    Verb.exec: exec_in_ns,
    Verb.status: status,
    Verb.down: down,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    # Like the shell vlab's `export`: vagrant on the host (box add/list) and in the namespace use the same home.
    os.environ["VAGRANT_HOME"] = str(VAGRANT_HOME)
    os.chdir(REPO_ROOT)  # vagrant finds the Vagrantfile here; exec's relative paths are the repository's
    try:
        VERBS[args.verb](args)
    except Exit as exc:
        return exc.code
    except LabError as exc:
        print(f"vlab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
