#!/usr/bin/python3
"""Shut NGINX out of an API instance that does not answer, and let it back in the moment it does.

NGINX runs without its passive check (max_fails=0): a failed request is retried on the other
instance (proxy_next_upstream), but no instance is ever taken out for fail_timeout, so one
that recovers is back with NGINX's next request to it. What NGINX alone cannot see is an
instance that does not answer at all: a node gone or cut off (connections wait
proxy_connect_timeout, requests already sent wait proxy_read_timeout, which cannot be short
since an instance legitimately holds a request through a Redis failover) or a process that
accepts but is stuck. Every --interval this watcher connects to each instance, and every
--health-every rounds (every round while it is in doubt) asks --health-path on that
connection. An instance that is

  unreachable (no answer to the connection within --timeout, --fall rounds in a row) or
  hung (no answer to the health request within --health-timeout, --fall times in a row)

is shut out: an nftables rule on this node resets every packet NGINX's workers (--user) send
to it, so NGINX's connections to it fail at once and its requests go to the other instance,
and this node's sockets to it are closed (`ss -K`), so requests already waiting on them are
retried at once too (a POST is keyed: a retry replays instead of storing twice). The rule
goes as soon as the instance answers again. An instance that answers, even 503 (over its memory threshold: it sheds with 429,
which NGINX retries elsewhere), or refuses (the process is gone: NGINX gets the reset itself)
is not shut out, and never every instance: if none answers, NGINX keeps them all.

The rules live in their own table (inet halab_upstream_watch), written whole each round
while any instance is shut out, so a ruleset reload (the firewall role's `flush ruleset`)
loses them for one round at most; the table is deleted when the watcher stops.

Standard library and nft only; one JSON line per change of state on stdout (the journal).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import enum
import ipaddress
import json
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

TABLE = "inet halab_upstream_watch"


class State(enum.Enum):
    """What one round saw, best first: the order shut_out() keeps instances in."""

    ANSWERS = "answers"  # accepted the connection (and answered the health request, if asked)
    REFUSED = "refused"  # the node resets the connection: the process is gone, NGINX sees it too
    HUNG = "hung"  # accepted, but no answer to the health request
    UNREACHABLE = "unreachable"  # nothing answers the connection: node or network gone

    @property
    def rank(self) -> int:
        return list(State).index(self)


SILENT = (State.HUNG, State.UNREACHABLE)  # the states an instance is shut out for


@dataclass
class Peer:
    address: str
    port: int
    state: State = State.ANSWERS  # assumed at start
    misses: int = 0  # rounds in a row silent (hung or unreachable)
    since_health: int = 0  # rounds since the last health request

    @property
    def name(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def silent(self) -> bool:
        return self.state in SILENT


@dataclass(frozen=True)
class Options:
    interval: float
    timeout: float  # for the connection: past it, the node is unreachable
    fall: int
    health_path: str
    health_every: int  # rounds between health requests to an instance that answers
    health_timeout: float  # for the health answer: past it, the instance is hung
    uid: int  # NGINX's workers: the only sockets the rules reset
    nft: str = field(default="nft")


def log(event: str, peer: Peer | None = None, **fields: object) -> None:
    head = {"event": event} | ({"peer": peer.name} if peer else {})
    print(json.dumps(head | fields), flush=True)


def parse_peer(text: str) -> Peer:
    address, _, port = text.rpartition(":")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not ADDRESS:PORT (an IP address): {text!r}") from None
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"not ADDRESS:PORT: {text!r}")
    return Peer(address, int(port))


def health_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: halab-upstream-watch\r\nConnection: close\r\n\r\n".encode()


def check(peer: Peer, opts: Options, ask_health: bool) -> State:
    """One TCP connection, answered (accepted or refused) within opts.timeout or not; if
    ask_health, then one health request on it, answered (any status) within opts.health_timeout."""
    try:
        conn = socket.create_connection((peer.address, peer.port), timeout=opts.timeout)
    except ConnectionRefusedError:
        return State.REFUSED
    except OSError:  # timed out, no route to host
        return State.UNREACHABLE
    with conn:
        if not ask_health:
            return State.ANSWERS
        try:
            conn.settimeout(opts.health_timeout)
            conn.sendall(health_request(opts.health_path))
            answered = conn.recv(16).startswith(b"HTTP/")
        except TimeoutError:
            return State.HUNG
        except OSError:  # reset: the process died meanwhile
            return State.REFUSED
    return State.ANSWERS if answered else State.REFUSED


def shut_out(peers: Iterable[Peer]) -> list[Peer]:
    """The silent peers, except the best of them when none answers: NGINX keeps at least one."""
    peers = list(peers)
    silent = [p for p in peers if p.silent]
    if len(silent) < len(peers):
        return silent
    best = min(p.state.rank for p in peers)
    return [p for p in silent if p.state.rank > best]


def ruleset(shut: list[Peer], uid: int) -> str:
    """One nft transaction: the table as it must be (deleted when nothing is shut out)."""
    head = f"add table {TABLE}\n"
    if not shut:
        return head + f"delete table {TABLE}\n"
    lines = [
        head,
        f"add chain {TABLE} output {{ type filter hook output priority 0; policy accept; }}\n",
        f"flush chain {TABLE} output\n",
    ]
    for peer in shut:
        family = "ip6" if ipaddress.ip_address(peer.address).version == 6 else "ip"
        lines.append(
            f"add rule {TABLE} output meta skuid {uid} {family} daddr {peer.address} "
            f"tcp dport {peer.port} counter reject with tcp reset\n"
        )
    return "".join(lines)


def apply(shut: list[Peer], opts: Options) -> bool:
    result = subprocess.run([opts.nft, "-f", "-"], input=ruleset(shut, opts.uid), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log("nft-failed", rc=result.returncode, stderr=result.stderr.strip()[-300:])
    return result.returncode == 0


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


def observe(peer: Peer, seen: State, opts: Options) -> None:
    """Fold one round's answer into the peer's state; silent only after opts.fall rounds."""
    if seen in SILENT:
        peer.misses += 1
        if peer.misses < opts.fall:
            return
        if peer.state is not seen:
            log(seen.value, peer, rounds=peer.misses)
    elif peer.silent:
        log("answers", peer, state=seen.value, rounds_silent=peer.misses)
    if seen not in SILENT:
        peer.misses = 0
    peer.state = seen


def round_of_checks(peers: list[Peer], opts: Options, pool: concurrent.futures.Executor) -> list[State]:
    asks = []
    for peer in peers:
        # in doubt (silent, or one silent round): ask every round, to shut out or readmit quickly
        ask = peer.since_health + 1 >= opts.health_every or peer.silent or peer.misses > 0
        peer.since_health = 0 if ask else peer.since_health + 1
        asks.append(ask)
    return list(pool.map(lambda pa: check(pa[0], opts, pa[1]), zip(peers, asks, strict=True)))


def watch(peers: list[Peer], opts: Options) -> None:
    applied: list[str] | None = None  # unknown at start: the first round writes the table
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(peers)) as pool:
        while True:
            started = time.monotonic()
            for peer, seen in zip(peers, round_of_checks(peers, opts, pool), strict=True):
                observe(peer, seen, opts)
            shut = shut_out(peers)
            names = [p.name for p in shut]
            # rewritten every round while anything is shut out: a ruleset reload may have dropped it
            if (names != applied or shut) and apply(shut, opts):
                if names != applied:
                    log("shut-out", peers=names)
                applied = names
            for peer in shut:
                if closed := close_sockets(peer):
                    log("closed", peer, sockets=closed)
            time.sleep(max(0.0, opts.interval - (time.monotonic() - started)))


def stop(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--peer", type=parse_peer, action="append", required=True, help="ADDRESS:PORT")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=0.2, help="seconds a connection may take")
    parser.add_argument("--fall", type=int, default=2, help="silent rounds in a row: shut out")
    parser.add_argument("--health-path", default="/livez", help="asked on the connection")
    parser.add_argument("--health-every", type=int, default=3, help="rounds between health requests")
    parser.add_argument("--health-timeout", type=float, default=0.3, help="seconds the health answer may take")
    parser.add_argument("--user", default="www-data", help="NGINX's worker user: whose packets are reset")
    args = parser.parse_args()
    opts = Options(
        args.interval,
        args.timeout,
        args.fall,
        args.health_path,
        args.health_every,
        args.health_timeout,
        pwd.getpwnam(args.user).pw_uid,
        shutil.which("nft") or "/usr/sbin/nft",
    )
    signal.signal(signal.SIGTERM, stop)
    log("watching", peers=[p.name for p in args.peer], **vars(opts))
    try:
        watch(args.peer, opts)  # until systemd stops it (SIGTERM)
    finally:
        apply([], opts)  # nothing shut out once nobody watches
    return 0


if __name__ == "__main__":
    sys.exit(main())
