"""The real server in a subprocess: sd_notify, unix-socket management via todo-apictl,
chunked oversized body on the wire, graceful SIGTERM, refused non-loopback management."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RedisServer, free_port

BIN = Path(sys.executable).parent


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    sock_path: str
    notify: socket.socket
    log: Path

    def messages(self, until: str, timeout: float = 15) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                got.append(self.notify.recv(4096).decode())
            except TimeoutError:
                break
            if any(until in m for m in got):
                return got
        raise AssertionError(f"no {until!r} in {got}; log: {self.log.read_text()[-2000:]}")


def _env(tmp_path: Path, redis_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TODO_API_")}
    env.update(
        TODO_API_INSTANCE="7",
        TODO_API_PORT=str(port),
        TODO_API_MANAGEMENT=f"unix:{tmp_path}/run/manage.sock",
        TODO_API_REDIS_URL=redis_url,
        TODO_API_MEMORY_LIMIT_MB="200",
        TODO_API_CGROUP_ROOT=str(tmp_path / "no-cgroup"),
        TODO_API_PROC_SELF_CGROUP=str(tmp_path / "no-proc"),
        NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
        WATCHDOG_USEC="400000",
    )
    env.pop("WATCHDOG_PID", None)
    env.update(extra)
    return env


@contextlib.contextmanager
def started(tmp_path: Path, redis_url: str) -> Iterator[Running]:
    """The real server (its todo-api entry point) on a free port, killed on exit."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "todo-api")], env=_env(tmp_path, redis_url, port),
            stdout=out, stderr=subprocess.STDOUT,
        )
    run = Running(proc, port, f"{tmp_path}/run/manage.sock", notify, log)
    try:
        yield run
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()


@pytest.fixture
def server(tmp_path: Path, redis_server: RedisServer) -> Iterator[Running]:
    with started(tmp_path, redis_server.url) as run:
        yield run


def ctl(*args: str) -> tuple[int, dict[str, object]]:
    p = subprocess.run([str(BIN / "todo-apictl"), *args], capture_output=True, timeout=60)
    out = p.stdout.decode() or p.stderr.decode()
    return p.returncode, json.loads(out)


def test_real_server_notify_cli_and_shutdown(server: Running) -> None:
    msgs = server.messages("READY=1")
    assert any("READY=1" in m for m in msgs)
    base = f"http://127.0.0.1:{server.port}"
    h = httpx.get(f"{base}/api/health", headers={"X-Request-ID": "b1e5c0de"})
    assert h.status_code == 200 and h.json()["instance"] == "7"
    assert h.headers["x-instance"] == "7"
    assert httpx.post(f"{base}/api/stress").status_code == 404
    assert oct(os.stat(server.sock_path).st_mode & 0o777) == "0o660"

    # chunked 17 KiB body on the wire -> 413 JSON before parsing
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /api/todos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(17):
            s.sendall(b"400\r\n" + b"a" * 1024 + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        head = ""
        while '"request body too large"' not in head:
            try:
                chunk = s.recv(4096).decode()
            except ConnectionResetError:
                break
            if not chunk:
                break
            head += chunk
    assert head.startswith("HTTP/1.1 413") and '"request body too large"' in head

    code, st = ctl("--socket", server.sock_path, "status")
    assert code == 0 and st["instance"] == "7"
    code, st = ctl("--socket", server.sock_path, "stress", "--mb", "180")
    assert code == 0, st
    assert st["allocatedMB"] == 180
    health = st["health"]
    assert isinstance(health, dict) and health["status"] == "UNHEALTHY"
    assert httpx.get(f"{base}/api/health").status_code == 503
    shed = httpx.get(f"{base}/api/todos")
    assert shed.status_code == 429 and "retry-after" in shed.headers
    code, st = ctl("--socket", server.sock_path, "clear")
    assert code == 0 and st["freedMB"] == 180
    health = st["health"]
    assert isinstance(health, dict) and health["status"] == "OK", st
    assert httpx.get(f"{base}/api/todos").status_code == 200

    code, err = ctl("--socket", server.sock_path + ".nope", "status")
    assert code == 2 and err["error"] == "management plane unreachable"

    # watchdog pings every WATCHDOG_USEC/2 = 0.2 s
    assert any("WATCHDOG=1" in m for m in server.messages("WATCHDOG=1", timeout=2))

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    assert any("STOPPING=1" in m for m in server.messages("STOPPING=1", timeout=5))
    assert not os.path.exists(server.sock_path)
    lines = [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]
    req = [x for x in lines if x.get("path") == "/api/health"]
    assert req and {"level", "time", "instance", "msg", "method", "status", "durationMs"} <= set(
        req[0]
    )
    # the load balancer's id of the request, to find it in NGINX's access log too
    assert [x["requestId"] for x in req][:1] == ["b1e5c0de"]
    assert any(x["level"] == 40 and "memoryPercent" in x for x in lines)


def test_non_loopback_management_refused(tmp_path: Path, redis_server: RedisServer) -> None:
    env = _env(tmp_path, redis_server.url, free_port(), TODO_API_MANAGEMENT="0.0.0.0:9001")
    p = subprocess.run([str(BIN / "todo-api")], env=env, capture_output=True, timeout=30)
    assert p.returncode == 2
    assert b"refusing non-loopback address" in p.stderr


def _raw(port: int, request: bytes, chunks: int = 0) -> str:
    """Send a raw request (plus ``chunks`` x 4 KiB of an endless header) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        try:
            for _ in range(chunks):
                s.sendall(b"a" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was sent
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            out += data
            if b"\r\n\r\n" in out and (request.startswith(b"HEAD") or out.endswith(b"}")):
                break
    return out.decode("latin-1")


def test_real_server_head_and_header_limit(server: Running) -> None:
    server.messages("READY=1")
    port = server.port
    head = _raw(port, b"HEAD /api/todos HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and "x-total-count: " in head.lower()
    assert head.endswith("\r\n\r\n")  # no body on the wire
    # 20 headers of 1 KiB: a 20 KiB head -> 431 JSON, connection closed
    many = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 1024) for i in range(20))
    r = _raw(port, b"GET /api/todos HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert r.startswith("HTTP/1.1 431") and '"request header fields too large"' in r
    # one endless header: refused once past the limit, not buffered (1 MiB was accepted)
    r = _raw(port, b"GET /api/todos HTTP/1.1\r\nHost: x\r\nX-Big: ", chunks=256)
    assert r.startswith("HTTP/1.1 431"), r[:200]
    # under the limit (15 x 1 KiB): served
    ok = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 1024) for i in range(14))
    r = _raw(port, b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + ok + b"\r\n")
    assert r.startswith("HTTP/1.1 200"), r[:200]
    # the server is fine afterwards
    assert httpx.get(f"http://127.0.0.1:{port}/livez").status_code == 200


def test_todos_of_the_earlier_layout_are_moved_on_start(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A Redis written by the earlier version (hash todos:data id -> JSON, sorted set
    todos:order of ids): the server moves every todo before READY=1, in order, keeps none
    twice, drops an id whose todo is gone, and lists them as before."""
    rdb = redis_server.client()
    rdb.flushdb()
    legacy: list[dict[str, Any]] = [
        {"id": f"{i:032x}", "texto": f"antes {i}", "completada": i % 2 == 0,
         "createdAt": "2026-01-01T00:00:00.000Z", "instance": "1"}
        for i in range(1, 1203)  # more than two of the migration's batches
    ]
    pipe = rdb.pipeline(transaction=False)
    for seq, todo in enumerate(legacy, start=1):
        pipe.hset("todos:data", todo["id"], json.dumps(todo))
        pipe.zadd("todos:order", {todo["id"]: seq})
    pipe.zadd("todos:order", {"gone": len(legacy) + 1})  # its JSON was never written
    pipe.set("todos:seq", len(legacy) + 1)
    pipe.execute()
    with started(tmp_path, redis_server.url) as server:
        server.messages("READY=1")
        base = f"http://127.0.0.1:{server.port}"
        page = httpx.get(f"{base}/api/todos", params={"limit": 500, "order": "oldest"})
        assert page.status_code == 200 and page.headers["x-total-count"] == str(len(legacy))
        assert page.json() == legacy[:500]
        one = httpx.get(f"{base}/api/todos/{legacy[-1]['id']}")
        assert one.status_code == 200 and one.json() == legacy[-1]
        created = httpx.post(f"{base}/api/todos", json={"texto": "después"})
        newest = httpx.get(f"{base}/api/todos", params={"limit": 1}).json()
        assert created.status_code == 201 and newest == [created.json()]
        assert not rdb.exists("todos:data", "todos:order")
        lines = [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]
        assert [x["todos"] for x in lines if x["msg"] == "storage layout migrated"] == [len(legacy)]
    rdb.close()
