"""todo-apictl: operator CLI for the management plane (stdlib only).

Talks HTTP over the instance's unix socket (/run/todo-api-N/manage.sock), or --socket PATH,
or --url http://127.0.0.1:9001. Prints JSON; exits 1 on an HTTP error, 2 when unreachable."""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

from .config import management_socket


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def _connection(args: argparse.Namespace) -> tuple[http.client.HTTPConnection, str]:
    if args.url:
        u = urlsplit(args.url)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit(f"todo-apictl: --url must be http://HOST:PORT, got {args.url!r}")
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=args.timeout)
        return conn, u.path.rstrip("/")
    path = args.socket or management_socket(args.instance)
    return UnixHTTPConnection(path, args.timeout), ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="todo-apictl", description=__doc__)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--instance", "-i", default="1", help="instance N (default 1)")
    where.add_argument("--socket", help="path of the management unix socket")
    where.add_argument("--url", help="http://127.0.0.1:PORT for a loopback TCP listener")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stress", help="allocate memory (default TODO_API_STRESS_TARGET_MB)")
    st.add_argument("--mb", type=int, help="target MB held after the call")
    sub.add_parser("clear", help="free the stress memory")
    sub.add_parser("status", help="health and stress state")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    method, path = {
        "stress": ("POST", "/stress"),
        "clear": ("POST", "/clear"),
        "status": ("GET", "/status"),
    }[args.command]
    if args.command == "stress" and args.mb is not None:
        path += f"?mb={args.mb}"
    conn, prefix = _connection(args)
    try:
        conn.request(method, prefix + path, headers={"Content-Length": "0"})
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        print(json.dumps({"error": "management plane unreachable", "detail": str(exc)}),
              file=sys.stderr)
        return 2
    finally:
        conn.close()
    try:
        data: Any = json.loads(raw)
    except ValueError:
        data = {"error": "non-JSON answer", "detail": raw.decode(errors="replace")}
    print(json.dumps(data, indent=2))
    return 0 if 200 <= resp.status < 300 else 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
