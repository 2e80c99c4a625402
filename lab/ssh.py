"""The lab's SSH client: one key pair, one known_hosts file and a client configuration for
`ssh app1` from the host, all made by labctl (the configuration removed again by `down`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from .paths import KNOWN_HOSTS, SSH_CLIENT_CONFIG, SSH_DIR, SSH_KEY
from .run import run
from .topology import Node


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
    """Run a command on a node; a node that does not answer in time is exit 255, like ssh's own failures."""
    try:
        return subprocess.run(
            ssh_command(address, command), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 255, "", f"timed out after {timeout:.0f}s")


def ensure_key() -> None:
    SSH_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not SSH_KEY.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "halab-lab", "-f", str(SSH_KEY)])


def public_key() -> str:
    return SSH_KEY.with_suffix(".pub").read_text()


def known_hosts_lines(node: Node, etc_ssh: Path) -> list[str]:
    """known_hosts lines for a node from its host keys (etc_ssh: its /etc/ssh seen from the host)."""
    lines = []
    for pub in sorted(etc_ssh.glob("ssh_host_*_key.pub")):
        key = " ".join(pub.read_text().split()[:2])
        lines.append(f"{node.address},{node.name} {key}")
    return lines


def write_known_hosts(nodes: Iterable[tuple[Node, Path]]) -> None:
    lines = [line for node, etc_ssh in nodes for line in known_hosts_lines(node, etc_ssh)]
    KNOWN_HOSTS.write_text("\n".join(lines) + "\n")


def client_config_text(nodes: Iterable[Node]) -> str:
    """ssh_config(5) stanzas: each node by its name, as root, with the lab's key and known_hosts."""
    nodes = list(nodes)
    lines = [
        "# Written by labctl (make lab): `ssh app1` from this host reaches the lab's node app1.",
        "# Removed by labctl down (make down). Do not edit: it is rewritten.",
    ]
    for n in nodes:
        lines += [f"Host {n.name}", f"    HostName {n.address}"]
    lines += [
        f"Host {' '.join(n.name for n in nodes)}",
        "    User root",
        f"    IdentityFile {SSH_KEY}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {KNOWN_HOSTS}",
        "    StrictHostKeyChecking yes",
        "    ConnectTimeout 5",
    ]
    return "\n".join(lines) + "\n"


def write_client_config(nodes: Iterable[Node], path: Path = SSH_CLIENT_CONFIG) -> bool:
    """Write it if it differs; whether it changed."""
    text = client_config_text(nodes)
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def remove_client_config(path: Path = SSH_CLIENT_CONFIG) -> None:
    path.unlink(missing_ok=True)
