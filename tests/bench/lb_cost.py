"""The load balancer's cost, on the lab: the same load to one instance, directly and through NGINX.

wrk (the host's binary) runs in a load balancer node's network namespace, so both paths start at
the same place and the firewall lets it reach the instance: directly, `http://<instance>/...`;
through NGINX, `http://<that balancer's address>/...` (NGINX listens on every address). Every
other instance is drained on that balancer for the run (nginx_lb's `drain`, as
playbooks/rolling-restart.yml does: rendered `down`, reloaded), so NGINX has one instance to
send to, and put back afterwards. Not stopped: NGINX runs without its passive check
(max_fails=0), so a stopped instance would still be tried on its turn in the round robin,
every other request a refused connection and an error-log line, which is not the cost of
balancing one instance. 100 todos are stored first (and deleted after) for `GET /api/todos?limit=100`.
Each path runs twice in turn (direct, NGINX, direct, NGINX) and the better run of each counts:
the lab shares this host's cores with everything else. That sharing is also why each run says
where the CPU went, per request: the instance, NGINX, mtail (which reads NGINX's access log),
journald (the instance's log lines) and wrk itself, all on the same cores, so what NGINX and
mtail spend is taken from the instance. The nodes are this host's processes: one walk of /proc
at each end of a run sees them all, by name. Bounded: wrk -d per run, lab addresses only.

    .venv/bin/python -m tests.bench.lb_cost [--duration 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from lab import host, node, state
from tests.support.ansible import drain
from tests.support.model import LOADBALANCER_GROUP, PUBLIC_URL, TOPO, first
from tests.support.wait import wait_until

PATHS = ("/api/health", "/api/todos?limit=100")
FILL = 100
# process name (/proc/PID/stat) -> what it is; wrk is counted as this script's child
COMPONENTS = {
    "todo-api": "instance",
    "nginx": "NGINX",
    "mtail": "mtail",
    "systemd-journal": "journald",
    "redis-server": "Redis",
}
SHOWN = (*COMPONENTS.values(), "wrk")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    rps: float
    p99_ms: float
    non_2xx: int
    requests: int = 0
    cpu_us: tuple[tuple[str, float], ...] = ()  # CPU us per request, by component


def cpu_seconds_by_component() -> dict[str, float]:
    """CPU seconds (user + system) so far of every process on this host named in COMPONENTS."""
    ticks: Counter[str] = Counter()
    for entry in Path("/proc").iterdir():
        stat = host.proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is None:  # not a process, or gone since the listing
            continue
        comm, fields = stat
        component = COMPONENTS.get(comm)
        if component is not None:
            ticks[component] += int(fields[11]) + int(fields[12])  # utime, stime
    return {name: n / CLK_TCK for name, n in ticks.items()}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_wrk(out: str) -> Run:
    """req/s of 2xx answers only (a refusal is no throughput), p99, and the refusals."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(ms|s)\b", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", out, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if total is None or p99 is None:
        raise RuntimeError(f"wrk said: {out}")
    refused = int(non_2xx.group(1)) if non_2xx else 0
    seconds = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    requests = int(total.group(1))
    return Run((requests - refused) / seconds, float(p99.group(1)) * scale, refused, requests)


def in_netns(lb: str) -> list[str] | None:
    """The prefix that runs a host command in the node's network namespace; None: no lab up."""
    lab = state.load()
    if lab is None:
        return None
    nspawn = lab.node(lb).pid
    leader = node.leader_pid(nspawn) if nspawn else None
    if leader is None:
        sys.exit(f"{lb} does not run")
    return ["nsenter", f"--target={leader}", "--net", "--"]


def wrk(prefix: list[str], url: str, seconds: int, connections: int) -> Run:
    """One wrk run, with the CPU each component spent on it per request."""
    cmd = [*prefix, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency", url]
    before, wrk_before = cpu_seconds_by_component(), children_cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    after = cpu_seconds_by_component()
    spent = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in COMPONENTS.values()}
    spent["wrk"] = children_cpu_seconds() - wrk_before
    run = parse_wrk(out)
    per_request = tuple((name, spent[name] * 1e6 / max(run.requests, 1)) for name in SHOWN)
    return replace(run, cpu_us=per_request)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk missing: apt-get install -y wrk")
    lb = first(LOADBALANCER_GROUP)
    target, *rest = (str(i.id) for i in TOPO.instances)
    inst = TOPO.instance(target)
    others = sorted({TOPO.instance(i).host for i in rest} - {inst.host})  # drained by host
    prefix = in_netns(lb.name)
    if prefix is None:
        print("load balancer cost: no lab is up (make lab, then make bench): not measured")
        return
    ids: list[str] = []
    with httpx.Client(base_url=PUBLIC_URL, timeout=10) as client:
        try:
            for i in range(FILL):
                ids.append(client.post("/api/todos", json={"texto": f"bench lb {i}"}).raise_for_status().json()["id"])
            drain(lb.name, others)
            wait_until(
                f"NGINX on {lb.name} sending to instance {target} alone",
                lambda: all(client.get("/api/health").headers.get("x-instance") == target for _ in range(10)),
                timeout=30,
            )
            direct, balanced = f"http://{inst.address}:{inst.port}", f"http://{lb.address}"
            best: dict[tuple[str, str], Run] = {}
            for path in PATHS:
                for _ in range(2):
                    for name, base in (("direct", direct), ("nginx", balanced)):
                        r = wrk(prefix, base + path, args.duration, args.connections)
                        if (path, name) not in best or r.rps > best[(path, name)].rps:
                            best[(path, name)] = r
        finally:
            drain(lb.name, [])
            for todo_id in ids:
                client.delete(f"/api/todos/{todo_id}")
    print(
        f"load balancer cost: wrk -t1 -c{args.connections} -d{args.duration}s from {lb.name}'s network namespace, "
        f"instance {target} alone ({inst.address}:{inst.port}); best of 2 runs each"
    )
    head = (
        f"{'request (2xx/s)':24} {'direct req/s':>12} {'NGINX req/s':>12} {'NGINX/direct':>12} "
        f"{'p99 direct':>10} {'p99 NGINX':>10} {'non-2xx':>8}"
    )
    print(head)
    print("-" * len(head))
    for path in PATHS:
        d, n = best[(path, "direct")], best[(path, "nginx")]
        print(
            f"GET {path:20} {d.rps:12.0f} {n.rps:12.0f} {n.rps / d.rps:11.2f}x "
            f"{d.p99_ms:8.1f}ms {n.p99_ms:8.1f}ms {d.non_2xx + n.non_2xx:8d}"
        )
    print()
    print("CPU us per request, by component (every node's processes share this host's cores):")
    head = f"{'request':16} {'path':7} " + " ".join(f"{name:>9}" for name in SHOWN) + f" {'total':>9}"
    print(head)
    print("-" * len(head))
    for path in PATHS:
        for name in ("direct", "nginx"):
            cpu = dict(best[(path, name)].cpu_us)
            cells = " ".join(f"{cpu[c]:9.1f}" for c in SHOWN)
            print(f"{path.split('?')[0]:16} {name:7} {cells} {sum(cpu.values()):9.1f}")
    print("done when: through NGINX >= 0.8x direct")


if __name__ == "__main__":
    main()
