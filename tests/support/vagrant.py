"""The Vagrant VMs (vagrant/vlab, make vagrant-lab): Vagrant's inventory, and a root command on a VM.

The VMs are reached the way operators reach them, over SSH with Vagrant's
generated inventory (the management plane); only from inside vlab's network
namespace, where their addresses exist.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from .model import SSH_PORT
from .run import REPO, run

INVENTORY = REPO / ".vagrant/provisioners/ansible/inventory/vagrant_ansible_inventory"
# One connection per VM, reused: a new one costs seconds of key exchange on an emulated CPU.
SSH_OPTIONS = {
    "StrictHostKeyChecking": "no",
    "UserKnownHostsFile": "/dev/null",
    "BatchMode": "yes",
    "ControlMaster": "auto",
    "ControlPath": "/tmp/halab-vagrant-ssh-%C",
    "ControlPersist": "120",
    "ConnectTimeout": "10",
}


def inventory_hosts(path: Path = INVENTORY) -> dict[str, dict[str, str]]:
    """Host lines of Vagrant's INI inventory: name -> ansible_* variables."""
    hosts: dict[str, dict[str, str]] = {}
    for line in path.read_text().splitlines():
        if "ansible_host=" not in line or line.lstrip().startswith(("#", ";", "[")):
            continue
        name, *pairs = shlex.split(line)
        hosts[name] = dict(p.split("=", 1) for p in pairs if "=" in p)
    return hosts


def ssh_command(host: dict[str, str], command: str) -> list[str]:
    """ssh to an inventory host as its ansible_user, the command run as root (sudo)."""
    options = [arg for key, value in SSH_OPTIONS.items() for arg in ("-o", f"{key}={value}")]
    return [
        "ssh", "-q", "-i", host["ansible_ssh_private_key_file"], "-p", host.get("ansible_port", str(SSH_PORT)), *options,
        f"{host.get('ansible_user', 'vagrant')}@{host['ansible_host']}", "sudo sh -c " + shlex.quote(command),
    ]  # fmt: skip


def on_node(node: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A command as root on a VM, over SSH."""
    cmd = ssh_command(inventory_hosts()[node], command)
    return run(cmd, check=check, timeout=timeout, what=f"{node}: {command!r}", tail=2000)
