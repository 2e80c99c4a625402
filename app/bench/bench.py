"""Benchmark: one real todo-api instance vs a minimal uvicorn app (and a FastAPI hello), same run.

Starts its own redis-server, one todo-api instance and two baselines on 127.0.0.1, then drives
each with ``wrk`` (C, Debian package ``wrk``), bounded by duration, threads and connections.
On a 2+ core box the servers are pinned to CPU 0 and wrk + redis-server to CPU 1 (``taskset``),
so the load generator does not eat the CPU the server under test needs. Every server is one
process, uvloop + httptools, access log off. Without wrk it falls back to a small asyncio
HTTP/1.1 client in this process (and says so: that mostly measures the client on 2 cores).

    .venv/bin/python app/bench/bench.py [--duration 5] [--connections 32] [--threads 1]

Prints one table: scenario, req/s, p50, p99, non-2xx, ratio vs the minimal uvicorn app
(the done-criterion: >= 0.5) and vs the FastAPI hello (the framework's floor).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HELLO = """
import json
BODY = json.dumps({"hello": "world"}).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
"""

HELLO_FASTAPI = """
from fastapi import FastAPI
app = FastAPI()
@app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
"""

# One script for every scenario; BENCH_* env vars choose method/body/Idempotency-Key.
# Without BENCH_IDEM no request() is defined, so wrk sends one static pre-built request.
WRK_LUA = r"""
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY") or ""
local idem = os.getenv("BENCH_IDEM") == "1"
local run = os.getenv("BENCH_RUN") or "r"
wrk.method = method
if body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local nthreads = 0
function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end
if idem then
  local n = 0
  function request()
    n = n + 1
    return wrk.format(nil, nil, {
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = run .. "-" .. tostring(tid) .. "-" .. tostring(n),
    }, body)
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%.0f,"duration_us":%.0f,"p50_us":%.1f,"p99_us":%.1f,' ..
    '"status":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"timeout":%.0f}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # "hello" | "fastapi" | "ours"
    method: str
    path: str
    body: str = ""
    idem: bool = False


SCENARIOS = [
    Scenario("uvicorn hello GET / (baseline)", "hello", "GET", "/"),
    Scenario("FastAPI hello GET /", "fastapi", "GET", "/"),
    Scenario("todo-api GET /api/todos (100 todos)", "ours", "GET", "/api/todos"),
    Scenario("todo-api POST /api/todos", "ours", "POST", "/api/todos", '{"texto":"bench"}'),
    Scenario(
        "todo-api POST + Idempotency-Key", "ours", "POST", "/api/todos", '{"texto":"bench"}', True
    ),
]


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def pin(cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


# --- wrk ------------------------------------------------------------------------------------


def run_wrk(
    wrk: str, lua: Path, port: int, sc: Scenario, seconds: float, conns: int, threads: int,
    cpu: int | None,
) -> Result:
    env = dict(os.environ, BENCH_METHOD=sc.method, BENCH_BODY=sc.body,
               BENCH_IDEM="1" if sc.idem else "0", BENCH_RUN=uuid.uuid4().hex[:12])
    cmd = [*pin(cpu), wrk, f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s",
           "--timeout", "5s", "-s", str(lua), f"http://127.0.0.1:{port}{sc.path}"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^BENCHJSON (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stdout}\n{p.stderr}")
    d = json.loads(m.group(1))
    errors = int(d["status"] + d["connect"] + d["read"] + d["write"] + d["timeout"])
    return Result(d["requests"] / (d["duration_us"] / 1e6), d["p50_us"] / 1000,
                  d["p99_us"] / 1000, errors)


# --- fallback: in-process asyncio client (only when wrk is missing) ---------------------------


def raw_request(sc: Scenario) -> Callable[[int], bytes]:
    def make(i: int) -> bytes:
        head = f"{sc.method} {sc.path} HTTP/1.1\r\nHost: bench\r\n"
        if sc.body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(sc.body)}\r\n"
        if sc.idem:
            head += f"Idempotency-Key: {uuid.uuid4().hex}\r\n"
        return (head + "\r\n").encode() + sc.body.encode()

    return make


async def _one_conn(port: int, make: Callable[[int], bytes], n: int, lat: list[float],
                    errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(n):
            t0 = time.perf_counter()
            writer.write(make(i))
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            if int(lines[0].split()[1]) >= 400:
                errors.append(1)
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.lower() == "content-length":
                    length = int(v)
            if length:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()


def run_python(port: int, sc: Scenario, total: int, conns: int) -> Result:
    async def go() -> Result:
        per = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]
        lat: list[float] = []
        errors: list[int] = []
        t0 = time.perf_counter()
        make = raw_request(sc)
        await asyncio.gather(*[_one_conn(port, make, n, lat, errors) for n in per])
        wall = time.perf_counter() - t0
        lat.sort()
        return Result(total / wall, lat[len(lat) // 2] * 1000,
                      lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, len(errors))

    return asyncio.run(go())


# --- main -----------------------------------------------------------------------------------


def prefill(port: int, n: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(n):
            conn.request("POST", "/api/todos", json.dumps({"texto": f"todo {i}"}),
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 201:
                raise RuntimeError(f"prefill POST -> {r.status}")
        conn.request("GET", "/api/todos")
        return len(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (wrk)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per scenario")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--requests", type=int, default=2000, help="fallback client only")
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument("--todo-api", default=None,
                    help="command that starts the instance (default: todo-api beside python)")
    args = ap.parse_args()
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server missing: apt-get install -y redis-server")
    wrk = shutil.which("wrk")
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    srv_cpu, gen_cpu = (0, 1) if pinned else (None, None)
    bindir = Path(sys.executable).parent
    tmp = Path(tempfile.mkdtemp(prefix="todo-bench-"))
    (tmp / "bench_hello.py").write_text(HELLO)
    (tmp / "bench_fastapi.py").write_text(HELLO_FASTAPI)
    lua = tmp / "bench.lua"
    lua.write_text(WRK_LUA)
    rport = free_port()
    ports = {"ours": free_port(), "hello": free_port(), "fastapi": free_port()}
    procs: list[subprocess.Popen[bytes]] = []
    dn = subprocess.DEVNULL
    uv_flags = ["--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                "--log-level", "warning", "--app-dir", str(tmp), "--host", "127.0.0.1"]
    try:
        procs.append(subprocess.Popen(
            [*pin(gen_cpu), exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=dn, stderr=dn))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TODO_API_", "NOTIFY"))}
        env.update(TODO_API_INSTANCE="1", TODO_API_PORT=str(ports["ours"]),
                   TODO_API_MANAGEMENT=f"unix:{tmp}/manage.sock",
                   TODO_API_REDIS_URL=f"redis://127.0.0.1:{rport}/0",
                   TODO_API_MEMORY_LIMIT_MB="4096")
        wait_port(rport)
        # todo-api: its own entry point (uvloop + httptools, one process, uvicorn access log
        # off; its JSON request log line per request is part of the service and goes to
        # /dev/null here).
        cmd = shlex.split(args.todo_api) if args.todo_api else [str(bindir / "todo-api")]
        procs.append(subprocess.Popen([*pin(srv_cpu), *cmd], env=env, stdout=dn, stderr=dn))
        for name, mod in (("hello", "bench_hello:app"), ("fastapi", "bench_fastapi:app")):
            procs.append(subprocess.Popen(
                [*pin(srv_cpu), sys.executable, "-m", "uvicorn", mod, "--port", str(ports[name]),
                 *uv_flags], stdout=dn, stderr=dn))
        for port in ports.values():
            wait_port(port)
        count = prefill(ports["ours"], 100)
        if count != 100:
            raise RuntimeError(f"expected 100 todos after prefill, got {count}")

        results: list[tuple[Scenario, Result]] = []
        for sc in SCENARIOS:  # GET /api/todos runs before any POST: the list stays at 100
            port = ports[sc.server]
            if wrk is not None:
                run_wrk(wrk, lua, port, sc, args.warmup, args.connections, args.threads, gen_cpu)
                r = run_wrk(wrk, lua, port, sc, args.duration, args.connections, args.threads,
                            gen_cpu)
            else:
                if gen_cpu is not None:
                    os.sched_setaffinity(0, {gen_cpu})
                run_python(port, sc, max(200, args.requests // 10), args.connections)
                r = run_python(port, sc, args.requests, args.connections)
            results.append((sc, r))

        if wrk is not None:
            print(f"load generator: wrk -t{args.threads} -c{args.connections} "
                  f"-d{max(1, round(args.duration))}s (+{args.warmup:g}s warm-up) per scenario")
        else:
            print(f"load generator: FALLBACK in-process Python client (wrk not found: "
                  f"apt-get install -y wrk), {args.requests} requests, {args.connections} "
                  "connections; on 2 cores this mostly measures the client")
        print("pinning: " + (f"servers on CPU {srv_cpu}, load generator + redis-server on CPU "
                             f"{gen_cpu}" if pinned else "none") +
              "; one process each, uvloop + httptools, access log off, loopback")
        base = results[0][1].rps
        floor = results[1][1].rps
        print(f"{'scenario':38} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} "
              f"{'/uvicorn':>8} {'/FastAPI':>8}")
        for sc, r in results:
            print(f"{sc.name:38} {r.rps:8.0f} {r.p50_ms:7.2f} {r.p99_ms:7.2f} {r.errors:7d} "
                  f"{r.rps / base:8.2f} {r.rps / floor:8.2f}")
        for sc, r in results[2:]:
            ratio = r.rps / base
            verdict = "OK (>= 0.5)" if ratio >= 0.5 else "BELOW target 0.5"
            print(f"target: {sc.name} / uvicorn hello = {ratio:.2f}  {verdict}")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
