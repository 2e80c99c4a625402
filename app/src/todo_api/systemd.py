"""sd_notify implemented in-house: one datagram to the AF_UNIX socket in $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``); False when not under systemd or the send failed."""
    e = os.environ if env is None else env
    addr = e.get("NOTIFY_SOCKET", "")
    if not addr or addr[0] not in ("/", "@"):
        return False
    target = "\0" + addr[1:] if addr[0] == "@" else addr  # leading @ = abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # never block the event loop if the receiver's queue is full
            sock.setblocking(False)
            sock.connect(target)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC in seconds, if the watchdog is on and meant for this process."""
    e = os.environ if env is None else env
    usec = e.get("WATCHDOG_USEC", "")
    pid = e.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 2
