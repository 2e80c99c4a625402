"""TCP and HTTP from the controller (the lab host)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Collection
from email.message import Message
from typing import Any

LOOPBACK = "127.0.0.1"


def tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """Something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = LOOPBACK, count: int = 1, avoid: Collection[int] = ()) -> int:
    """A port on `host` nothing listens on, with the `count - 1` ports after it free too; none in `avoid`."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        ports = range(port, port + count)
        if not set(ports) & set(avoid) and not any(tcp_open(host, p, timeout=0.5) for p in ports):
            return port
    raise RuntimeError(f"no {count} free consecutive ports on {host}")


def http_url(address: str, port: int, path: str = "") -> str:
    return f"http://{address}" + ("" if port == 80 else f":{port}") + path


def http(url: str, method: str = "GET", timeout: float = 5.0, **kw: Any) -> tuple[int, Message, bytes]:
    """(status, headers, body) without raising on HTTP errors."""
    req = urllib.request.Request(url, method=method, **kw)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
