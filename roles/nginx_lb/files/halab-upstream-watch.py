#!/usr/bin/python3
"""Cut NGINX loose from an API instance the network lost; take one that is ready again back at once.

NGINX's own (passive) check takes an instance out after one failed request and sends it one
request again each fail_timeout. Two things it cannot do, this watcher does, each --interval:

* Unreachable: NGINX notices a dead process at once (the node answers with a reset) but not a
  node that vanished (plug pulled, network cut): a request already sent there waits
  proxy_read_timeout, which cannot be short since an instance legitimately holds a request
  through a Redis failover. An instance whose TCP connection goes unanswered --fall rounds in a
  row has every socket of this node to it closed (`ss -K`: the kernel's SOCK_DESTROY, which
  needs CAP_NET_ADMIN), each round until it answers again. NGINX's requests on them fail at
  once and go to the other instance (proxy_next_upstream error; a POST is keyed, so a retry
  replays instead of storing twice).
* Ready again: NGINX's fail_timeout counts whole seconds (1s means 1 to 2 s) and then has to
  be answered. When an instance that was out (unreachable, refusing, or not ready for --fall
  rounds) answers its readiness path 200 again, the watcher reloads NGINX (SIGHUP to the
  master, which needs CAP_KILL): new workers start with no failure on record and send it
  requests at once; the old ones finish theirs.

Standard library only; one JSON line per event on stdout (the journal).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import enum
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass


class State(enum.Enum):
    READY = "ready"  # answers its readiness path 200
    UNREADY = "unready"  # answers, but not 200 (over its memory threshold, starting) or slowly
    REFUSED = "refused"  # the node resets the connection: the process is gone
    UNREACHABLE = "unreachable"  # nothing answers the connection: node or network gone


@dataclass
class Peer:
    address: str
    port: int
    state: State = State.READY  # assumed at start: no reload for what was never seen out
    misses: int = 0  # rounds in a row not READY

    @property
    def name(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Options:
    path: str
    interval: float
    timeout: float  # for the connection: past it, the node is unreachable
    answer_timeout: float  # for the answer: past it, the instance is slow (not ready)
    fall: int
    reload_gap: float
    nginx_pid_file: str


def log(event: str, peer: Peer | None = None, **fields: object) -> None:
    head = {"event": event} | ({"peer": peer.name} if peer else {})
    print(json.dumps(head | fields), flush=True)


def parse_peer(text: str) -> Peer:
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not ADDRESS:PORT: {text!r}")
    return Peer(address, int(port))


def check(peer: Peer, opts: Options) -> State:
    """One readiness request: connected within opts.timeout, answered within answer_timeout."""
    try:
        sock = socket.create_connection((peer.address, peer.port), timeout=opts.timeout)
    except ConnectionRefusedError:
        return State.REFUSED
    except OSError:  # timed out, no route to host
        return State.UNREACHABLE
    with sock:
        try:
            sock.settimeout(opts.answer_timeout)
            sock.sendall(f"GET {opts.path} HTTP/1.0\r\nHost: {peer.address}\r\n\r\n".encode())
            status_line = sock.recv(64).split(b"\r\n", 1)[0].split()
        except OSError:
            return State.UNREADY  # connected: the node is there, the instance slow
    return State.READY if status_line[1:2] == [b"200"] else State.UNREADY


def close_sockets(peer: Peer) -> int:
    """Close every TCP socket of this node to the peer; how many the kernel closed."""
    result = subprocess.run(
        ["ss", "-K", "-t", "-n", "-H", "dst", peer.address, "dport", "=", f":{peer.port}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        log("ss-failed", peer, rc=result.returncode, stderr=result.stderr.strip()[-300:])
    return len([line for line in result.stdout.splitlines() if line.strip()])


def reload_nginx(pid_file: str, ready: list[Peer]) -> None:
    try:
        with open(pid_file) as f:
            os.kill(int(f.read().strip()), signal.SIGHUP)
    except (OSError, ValueError) as exc:  # NGINX not running: nothing to readmit into
        log("reload-skipped", error=str(exc), ready=[p.name for p in ready])
        return
    log("reloaded", ready=[p.name for p in ready])


def watch(peers: list[Peer], opts: Options) -> None:
    back: dict[str, Peer] = {}  # ready again, not yet readmitted by a reload
    reloaded = float("-inf")
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(peers)) as pool:
        while True:
            started = time.monotonic()
            states = list(pool.map(lambda p: check(p, opts), peers))
            for peer, state in zip(peers, states, strict=True):
                if state is State.READY:
                    if peer.misses >= opts.fall:
                        back[peer.name] = peer
                        log("ready", peer, was=peer.state.value, rounds_out=peer.misses)
                    peer.state, peer.misses = state, 0
                    continue
                back.pop(peer.name, None)
                peer.misses += 1
                if peer.misses < opts.fall:
                    continue
                if peer.misses == opts.fall:
                    log("out", peer, state=state.value)
                peer.state = state
                if state is State.UNREACHABLE:
                    closed = close_sockets(peer)
                    if closed:
                        log("closed", peer, sockets=closed)
            # One reload readmits every instance back by then; an instance that flaps does
            # not reload NGINX more often than reload_gap.
            if back and started - reloaded >= opts.reload_gap:
                reload_nginx(opts.nginx_pid_file, list(back.values()))
                back.clear()
                reloaded = started
            time.sleep(max(0.0, opts.interval - (time.monotonic() - started)))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--peer", type=parse_peer, action="append", required=True, help="ADDRESS:PORT")
    parser.add_argument("--path", default="/readyz", help="the instances' readiness path (200: ready)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=0.2, help="seconds a connection may take")
    parser.add_argument("--answer-timeout", type=float, default=1.0, help="seconds the answer may take")
    parser.add_argument("--fall", type=int, default=2, help="rounds in a row that take an instance out")
    parser.add_argument("--reload-gap", type=float, default=1.0, help="seconds between two reloads, at least")
    parser.add_argument("--nginx-pid-file", default="/run/nginx.pid")
    args = parser.parse_args()
    opts = Options(
        args.path, args.interval, args.timeout, args.answer_timeout, args.fall, args.reload_gap, args.nginx_pid_file
    )
    log("watching", peers=[p.name for p in args.peer], **vars(opts))
    watch(args.peer, opts)  # until systemd stops it (SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
