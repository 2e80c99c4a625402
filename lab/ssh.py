"""The lab's SSH client: one key pair and one known_hosts file, both made by labctl."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from .paths import KNOWN_HOSTS, SSH_DIR, SSH_KEY
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
