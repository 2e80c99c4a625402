"""Benchmark: one real todo-api instance vs a minimal uvicorn hello-JSON app, same run.

Starts its own redis-server and both servers on loopback, sends a fixed number of requests
at fixed concurrency over keep-alive connections (a small asyncio HTTP/1.1 client), prints
requests/s, p50/p99 latency and the ratio ours/baseline. Traffic stays on 127.0.0.1.

    /tmp/appvenv/bin/python app/bench/bench.py [--requests 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = """
import json, uvicorn
BODY = json.dumps({"hello": "world"}).encode()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), access_log=False,
            log_level="warning")
"""

BASELINE_FASTAPI = """
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
"""


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


async def one_conn(
    port: int, reqs: list[bytes], latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for raw in reqs:
            t0 = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.lower() == "content-length":
                    length = int(v)
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def load(port: int, raw: bytes, total: int, conc: int) -> dict[str, float]:
    per = [total // conc + (1 if i < total % conc else 0) for i in range(conc)]
    lat: list[float] = []
    statuses: dict[int, int] = {}
    t0 = time.perf_counter()
    await asyncio.gather(*[one_conn(port, [raw] * n, lat, statuses) for n in per])
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "rps": total / wall,
        "p50": lat[len(lat) // 2] * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "errors": float(sum(v for k, v in statuses.items() if k >= 400)),
    }


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def post(path: str, body: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server missing: apt-get install -y redis-server")
    bindir = Path(sys.executable).parent
    tmp = Path(tempfile.mkdtemp(prefix="todo-bench-"))
    rport, ours, base, fbase = free_port(), free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    dn = subprocess.DEVNULL
    try:
        procs.append(subprocess.Popen(
            [exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=dn, stderr=dn))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TODO_API_", "NOTIFY"))}
        env.update(TODO_API_INSTANCE="1", TODO_API_PORT=str(ours),
                   TODO_API_MANAGEMENT=f"unix:{tmp}/manage.sock",
                   TODO_API_REDIS_URL=f"redis://127.0.0.1:{rport}/0",
                   TODO_API_MEMORY_LIMIT_MB="4096")
        wait_port(rport)
        procs.append(subprocess.Popen([str(bindir / "todo-api")], env=env, stdout=dn, stderr=dn))
        procs.append(subprocess.Popen([sys.executable, "-c", BASELINE, str(base)],
                                      stdout=dn, stderr=dn))
        procs.append(subprocess.Popen([sys.executable, "-c", BASELINE_FASTAPI, str(fbase)],
                                      stdout=dn, stderr=dn))
        for port in (ours, base, fbase):
            wait_port(port)
        n, c = args.requests, args.concurrency

        async def run() -> list[tuple[str, dict[str, float]]]:
            await load(ours, post("/api/todos", {"texto": "prefill"}), 100, 4)
            # warm-up
            await load(base, get("/"), 200, c)
            await load(fbase, get("/"), 200, c)
            await load(ours, get("/api/todos"), 200, c)
            out = [("baseline raw ASGI GET / (hello JSON)", await load(base, get("/"), n, c))]
            out.append(("baseline FastAPI GET / (hello JSON)", await load(fbase, get("/"), n, c)))
            out.append(("todo-api GET /api/todos (100 todos)",
                        await load(ours, get("/api/todos"), n, c)))
            out.append(("todo-api POST /api/todos",
                        await load(ours, post("/api/todos", {"texto": "bench"}), n, c)))
            return out

        results = asyncio.run(run())
        print(f"requests={n} concurrency={c} (keep-alive, loopback, 2 processes share the CPUs)")
        print(f"{'scenario':40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for name, r in results:
            print(f"{name:40} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:7.0f}")
        for bname, b in results[:2]:
            for name, r in results[2:]:
                ratio = r["rps"] / b["rps"]
                verdict = "OK (>= 0.5)" if ratio >= 0.5 else "BELOW target 0.5"
                print(f"ratio {name} / {bname.split(' GET')[0]} = {ratio:.2f}  {verdict}")
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
