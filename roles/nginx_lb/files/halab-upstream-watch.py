#!/usr/bin/python3
"""Cut NGINX loose from an API instance the network lost.

NGINX's own (passive) check takes an instance out after one failed request and sends it one
request again each fail_timeout. It notices a dead process at once (the node answers with a
reset) but not a node that vanished (plug pulled, network cut): a request already sent there
waits proxy_read_timeout, which cannot be short since an instance legitimately holds a request
through a Redis failover. This watcher connects to every instance each --interval; an instance
whose connection goes unanswered (--timeout) --fall rounds in a row has every socket of this
node to it closed (`ss -K`: the kernel's SOCK_DESTROY, which needs CAP_NET_ADMIN), each round
until it answers again. NGINX's requests on them fail at once and go to the other instance
(proxy_next_upstream error; a POST is keyed, so a retry replays instead of storing twice).

It does not readmit: a reload would (new workers forget the failures), but a reload closes
clients' idle keepalive connections, and a client without retries that sends on one just then
gets no answer (the failover suite's naive client met it). NGINX's passive check readmits an
instance within fail_timeout (1 to 2 s: it counts whole seconds) of its being ready.

Standard library only; one JSON line per change of state on stdout (the journal).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import enum
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass


class State(enum.Enum):
    ANSWERS = "answers"  # accepts the connection
    REFUSED = "refused"  # the node resets the connection: the process is gone, NGINX sees it too
    UNREACHABLE = "unreachable"  # nothing answers the connection: node or network gone


@dataclass
class Peer:
    address: str
    port: int
    state: State = State.ANSWERS  # assumed at start
    misses: int = 0  # rounds in a row unreachable

    @property
    def name(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Options:
    interval: float
    timeout: float  # for the connection: past it, the node is unreachable
    fall: int


def log(event: str, peer: Peer | None = None, **fields: object) -> None:
    head = {"event": event} | ({"peer": peer.name} if peer else {})
    print(json.dumps(head | fields), flush=True)


def parse_peer(text: str) -> Peer:
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not ADDRESS:PORT: {text!r}")
    return Peer(address, int(port))


def check(peer: Peer, opts: Options) -> State:
    """One TCP connection, answered (accepted or refused) within opts.timeout or not."""
    try:
        socket.create_connection((peer.address, peer.port), timeout=opts.timeout).close()
    except ConnectionRefusedError:
        return State.REFUSED
    except OSError:  # timed out, no route to host
        return State.UNREACHABLE
    return State.ANSWERS


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


def watch(peers: list[Peer], opts: Options) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(peers)) as pool:
        while True:
            started = time.monotonic()
            states = list(pool.map(lambda p: check(p, opts), peers))
            for peer, state in zip(peers, states, strict=True):
                if state is not State.UNREACHABLE:
                    if peer.state is State.UNREACHABLE:
                        log("reachable", peer, rounds_out=peer.misses)
                    peer.state, peer.misses = state, 0
                    continue
                peer.misses += 1
                if peer.misses < opts.fall:
                    continue
                if peer.state is not State.UNREACHABLE:
                    log("unreachable", peer, rounds=peer.misses)
                peer.state = state
                closed = close_sockets(peer)
                if closed:
                    log("closed", peer, sockets=closed)
            time.sleep(max(0.0, opts.interval - (time.monotonic() - started)))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--peer", type=parse_peer, action="append", required=True, help="ADDRESS:PORT")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=0.2, help="seconds a connection may take")
    parser.add_argument("--fall", type=int, default=2, help="unanswered rounds in a row: unreachable")
    args = parser.parse_args()
    opts = Options(args.interval, args.timeout, args.fall)
    log("watching", peers=[p.name for p in args.peer], **vars(opts))
    watch(args.peer, opts)  # until systemd stops it (SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
