"""The load balancer pair as the tests see it: each balancer's VRRP state (its keepalived
notify hook's file, read over the management plane), who holds the public address, and
an AddressWatch that asks the public address on fresh connections and times a takeover.
Used by the nspawn lab's failover suite and the Vagrant VMs' tests (each passes its on_node).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.failover.loadgen import TLS

from .model import LOADBALANCER_GROUP, PUBLIC_URL, TOPO
from .probes import OnNode
from .wait import poll, wait_until

BALANCERS = [n.name for n in TOPO.group(LOADBALANCER_GROUP)]
STATE_FILE = TOPO.services.balancer_state_file


class Balancers:
    def __init__(self, on_node: OnNode) -> None:
        self.on_node = on_node

    def vrrp_record(self, node: str) -> dict[str, object]:
        """What the node's keepalived notify hook last wrote: its VRRP state and `since`, when
        it entered that state ({} if unreadable)."""
        res = self.on_node(node, f"cat {STATE_FILE}", check=False, timeout=30)
        try:
            record = json.loads(res.stdout) if res.returncode == 0 else {}
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def vrrp_state(self, node: str) -> str:
        """The node's VRRP state as its keepalived notify hook last wrote it ("" if unreadable)."""
        return str(self.vrrp_record(node).get("state", ""))

    def masters(self) -> list[str]:
        return [n for n in BALANCERS if self.vrrp_state(n) == "MASTER"]

    def holder(self) -> str:
        """The balancer holding the public address; exactly one must."""
        holders = self.masters()
        assert len(holders) == 1, f"expected one VRRP master among {BALANCERS}, found {holders}"
        return holders[0]

    def settled_holder(self, timeout: float = 60) -> str:
        """holder(), asked until exactly one master answers (within `timeout`): on an emulated
        VM an SSH call can time out, and a transition takes a moment."""
        seen: list[list[str]] = []

        def one() -> str:
            seen.append(self.masters())
            return seen[-1][0] if len(seen[-1]) == 1 else ""

        holder = poll(one, timeout=timeout, every=1.0)
        assert holder, f"no single VRRP master within {timeout:.0f} s; the last views: {seen[-3:]}"
        return holder

    def wait_standby(self, node: str, timeout: float = 120) -> None:
        wait_until(f"{node} a VRRP standby again", lambda: self.vrrp_state(node) == "BACKUP", timeout=timeout, every=0.5)


def peer_of(node: str) -> str:
    return next(n for n in BALANCERS if n != node)


@dataclass
class Sample:
    at: float  # time.monotonic()
    balancer: str | None  # X-Balancer of the answer; None: no answer
    error: str | None = None


@dataclass
class AddressWatch:
    """Asks the public address for /api/health on a fresh connection, from `probes`
    threads each trying every `every` s (each try bounded by `timeout`), started
    `every / probes` apart, until stopped or `max_seconds` have passed. A try on a
    dead holder waits out its timeout; the other probes keep sampling meanwhile, so
    the watch resolves a takeover to about `timeout / probes`."""

    url: str = PUBLIC_URL
    every: float = 0.05
    timeout: float = 0.25
    probes: int = 5
    max_seconds: float = 180.0
    _samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> AddressWatch:
        for i in range(self.probes):
            thread = threading.Thread(target=self._run, args=(i * self.every / self.probes,), name=f"address-watch-{i}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self, offset: float) -> None:
        ends = time.monotonic() + self.max_seconds
        self._stop.wait(offset)
        while not self._stop.is_set() and time.monotonic() < ends:
            started = time.monotonic()
            try:
                # A new client each time: a fresh connection, as a new visitor opens (with the
                # shared TLS context: five probes building their own every 50 ms took a core).
                with httpx.Client(timeout=self.timeout, verify=TLS) as client:
                    res = client.get(f"{self.url}/api/health")
                self._samples.append(Sample(started, res.headers.get("x-balancer") or "?"))
            except httpx.HTTPError as exc:
                self._samples.append(Sample(started, None, type(exc).__name__))
            self._stop.wait(max(0.0, self.every - (time.monotonic() - started)))

    @property
    def samples(self) -> list[Sample]:
        """Every try so far, in the order they started."""
        return sorted(list(self._samples), key=lambda s: s.at)

    def takeover(self, fault: float, old: str) -> float | None:
        """The outage a new visitor sees: seconds from the last answer of `old` (at or after
        `fault`, else `fault` itself) to the first answer of another balancer after `fault`.
        It starts when the address stopped answering, not when the command that broke the
        holder was typed (labctl itself takes a few hundred ms to start)."""
        samples = self.samples
        new = next((s for s in samples if s.at >= fault and s.balancer not in (None, old)), None)
        if new is None:
            return None
        last_old = max((s.at for s in samples if fault <= s.at < new.at and s.balancer == old), default=fault)
        return round(new.at - last_old, 3)

    def after(self, t: float) -> list[Sample]:
        return [s for s in self.samples if s.at >= t]

    def longest_silence(self, since: float) -> float:
        """The longest time, after `since`, between a try that got no answer and the next
        try that did (0.0: every try was answered). A slow answer under load can miss its
        timeout alone; an interruption silences every probe."""
        longest, silent_from = 0.0, None
        for s in self.after(since):
            if s.balancer is None:
                silent_from = s.at if silent_from is None else silent_from
            elif silent_from is not None:
                longest, silent_from = max(longest, s.at - silent_from), None
        return round(longest, 3)
