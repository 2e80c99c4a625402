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
the lab shares this host's cores with everything else. Bounded: wrk -d per run, lab addresses only.

    .venv/bin/python -m tests.bench.lb_cost [--duration 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import httpx

from lab import node, state
from tests.support.ansible import drain
from tests.support.model import LOADBALANCER_GROUP, PUBLIC_URL, TOPO, first
from tests.support.wait import wait_until

PATHS = ("/api/health", "/api/todos?limit=100")
FILL = 100


@dataclass(frozen=True)
class Run:
    rps: float
    p99_ms: float
    non_2xx: int


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
    return Run((int(total.group(1)) - refused) / seconds, float(p99.group(1)) * scale, refused)


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
    cmd = [*prefix, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency", url]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout)


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
    print("done when: through NGINX >= 0.8x direct")


if __name__ == "__main__":
    main()
