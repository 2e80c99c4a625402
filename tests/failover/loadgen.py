"""A bounded, steady load against the lab's load balancer, recording everything.

Two clients, one engine:
- `LoadRun`, a careful client (by default at most 16 requests in flight, each on its own
  connection, the one used last first, as a pool would): every POST
  carries an Idempotency-Key and is retried with the same key and body on a
  transport error, a 429 (the edge's rate limit) or a 502/503/504 (no
  instance, storage unavailable); GETs are retried the same way. A 507 (Redis
  full) is not retried: it does not pass within a scenario, and it must show
  in the table.
- `NaiveRun`, a client that never retries (as curl or a script would): every
  other POST carries no Idempotency-Key, 16 connections used in turn, any
  non-2xx answer or transport error is a failure. Only the load balancer's own
  retry (with its request id as the key) stands between it and a failure.
Every request ends as one `Outcome`; every acknowledged todo (a 201) is kept
so the run can check afterwards that each one exists exactly once.

Bounds: `total` requests at most, issued at `rate` per second, never past
`max_seconds`; each request's retries stop after `retry_budget` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypedDict, Unpack

import httpx

# What the careful client retries (issue 13's contract): 429 the edge's per-client
# limit; 502/504 NGINX with no answer; 503 storage unavailable, or every instance
# overloaded / none healthy (NGINX's JSON 503). There is no 409 any more.
RETRYABLE = {429, 502, 503, 504}
# One TLS context for every client of the tests: httpx builds one per client otherwise,
# about 26 ms of CPU each (this host), which the load and the probes paid again and again.
TLS = httpx.create_ssl_context()


def _is_json(response: httpx.Response) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return bool(response.headers.get("content-type", "").startswith("application/json"))


def _error_of(response: httpx.Response) -> str | None:
    """The `error` field of a JSON error body (None when there is none)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body["error"]) if isinstance(body, dict) and "error" in body else None


@dataclass
class Refusal:
    """A non-2xx answer: was it a clear one (JSON, with Retry-After on a 503)? Whose (X-Instance: the API's)?"""

    status: int
    json_body: bool
    retry_after: str | None
    instance: str | None = None  # X-Instance: set when an API instance answered, not NGINX itself
    error: str | None = None  # the JSON body's `error`
    request_id: str | None = None  # X-Request-ID: the load balancer's id of the request (its access log)


@dataclass
class Outcome:
    index: int
    method: str
    started: float  # seconds since the run started
    latency: float  # seconds, first try to final answer, retries included
    status: int  # final status; 0 = no answer at all
    instance: str | None  # X-Instance of the final answer
    attempts: int
    first_status: int  # status of the first try (0 = transport error)
    error: str | None = None
    served_by: list[tuple[float, str]] = field(default_factory=list)  # every answer's (time, instance)
    refusals: list[Refusal] = field(default_factory=list)  # every non-2xx answer on the way
    keyed: bool | None = None  # POST: sent with an Idempotency-Key (None for GET)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def answered(self) -> float:
        """When the final answer (or the final error) came, seconds since the run started."""
        return self.started + self.latency


@dataclass
class Acknowledged:
    id: str
    texto: str


class LoadShape(TypedDict, total=False):
    """LoadRun's bounds and pace, as a suite writes them once and a scenario overrides them."""

    total: int
    rate: float
    post_every: int
    max_seconds: float
    retry_budget: float
    concurrency: int
    request_timeout: float


class LoadRun:
    """The careful client (see the module's docstring)."""

    client: ClassVar[str] = "careful"
    retries: ClassVar[bool] = True  # retry RETRYABLE answers and transport errors within retry_budget
    # Which idle connection the next request takes: the one used last (False, as a pool
    # would: a slow pace keeps a few connections warm) or the one idle longest (True: every
    # connection carries requests in turn).
    in_turn: ClassVar[bool] = False

    def __init__(
        self,
        base_url: str,
        total: int = 2000,
        rate: float = 100.0,
        post_every: int = 5,
        max_seconds: float = 60.0,
        retry_budget: float = 20.0,
        concurrency: int = 16,
        request_timeout: float = 5.0,
    ) -> None:
        if total <= 0 or rate <= 0 or max_seconds <= 0:
            raise ValueError("a load run needs a positive count, rate and time bound")
        self.base_url = base_url.rstrip("/")
        self.total = total
        self.rate = rate
        self.post_every = post_every
        self.max_seconds = max_seconds
        self.retry_budget = retry_budget
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.tag = uuid.uuid4().hex[:8]
        self.outcomes: list[Outcome] = []
        self.acknowledged: list[Acknowledged] = []
        self.marks: dict[str, float] = {}
        self._t0 = 0.0
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop = threading.Event()

    # -- timeline ------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self._t0

    def mark(self, name: str) -> None:
        """Note when a step of the scenario happened (fault, recover ...)."""
        self.marks[name] = self.now()

    def mark_at(self, name: str, monotonic: float) -> None:
        """Note a step that happened at `monotonic` (time.monotonic(): on the nspawn lab the
        nodes share this host's clock, so a unit's ActiveEnterTimestampMonotonic is one)."""
        self.marks[name] = monotonic - self._t0

    def progress(self) -> int:
        return len(self.outcomes)

    # -- running ---------------------------------------------------------

    def start(self) -> LoadRun:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="loadgen", daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def wait(self) -> LoadRun:
        assert self._thread is not None
        self._thread.join(self.max_seconds + max(self.retry_budget, self.request_timeout) + 30)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(10)
        return self

    def run(self) -> LoadRun:
        return self.start().wait()

    def finished(self) -> bool:
        """Every request issued and answered (the count, the time bound or stop())."""
        return self._thread is not None and not self._thread.is_alive()

    def stop(self) -> None:
        """Stop issuing new requests (those in flight still finish)."""
        self._stop.set()

    async def _run(self) -> None:
        # `concurrency` single-connection clients, at most one request in flight on each.
        # One shared pool of that many connections (httpcore's) cost so much CPU per
        # request once dozens were in flight that a 0.8 s stall of the lab left this client
        # seconds behind for the rest of a scenario (the table's p99 was the client's own).
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        timeout = httpx.Timeout(self.request_timeout, connect=2.0)
        async with contextlib.AsyncExitStack() as stack:
            # The clients not in use (see `in_turn`).
            idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue() if self.in_turn else asyncio.LifoQueue()
            for _ in range(self.concurrency):
                client = httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=timeout, verify=TLS)
                idle.put_nowait(await stack.enter_async_context(client))
            self._t0 = time.monotonic()
            self._started.set()
            tasks = []
            issued = float("-inf")  # when the last request went out
            for i in range(self.total):
                # Steady, never faster than `rate`: a request held up (every client busy, a
                # stalled lab) goes out late and the next ones keep their spacing; they do
                # not rush to catch up (a burst of dozens at once is another experiment).
                due = max(i / self.rate, issued + 1 / self.rate)
                # Bounded in wall time too: a slow system must not stretch the run.
                if i / self.rate > self.max_seconds or self.now() > self.max_seconds or self._stop.is_set():
                    break
                delay = due - self.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                # At most `concurrency` requests in flight: wait for an idle client.
                client = await idle.get()
                issued = self.now()
                tasks.append(asyncio.create_task(self._one(idle, client, i)))
            await asyncio.gather(*tasks)

    async def _one(self, idle: asyncio.Queue[httpx.AsyncClient], client: httpx.AsyncClient, index: int) -> None:
        try:
            if index % self.post_every == 0:
                outcome = await self._post(client, index)
            else:
                outcome = await self._request(client, index, "GET", "/api/todos", None, {})
            self.outcomes.append(outcome)
        finally:
            idle.put_nowait(client)

    def keyed(self, index: int) -> bool:
        """Does this POST carry an Idempotency-Key? The careful client: always."""
        return True

    async def _post(self, client: httpx.AsyncClient, index: int) -> Outcome:
        texto = f"load {self.tag} #{index}"
        keyed = self.keyed(index)
        headers = {"Idempotency-Key": f"{self.tag}-{index}-{uuid.uuid4().hex}"} if keyed else {}
        outcome = await self._request(client, index, "POST", "/api/todos", {"texto": texto}, headers)
        outcome.keyed = keyed
        return outcome

    async def _request(
        self, client: httpx.AsyncClient, index: int, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> Outcome:
        started = self.now()
        deadline = started + self.retry_budget
        attempts, first_status, status, instance, error = 0, -1, 0, None, None
        served: list[tuple[float, str]] = []
        refusals: list[Refusal] = []
        backoff = 0.1
        while True:
            attempts += 1
            try:
                response = await client.request(method, path, json=body, headers=headers)
                status, error = response.status_code, None
                instance = response.headers.get("x-instance")
                if instance:
                    served.append((self.now(), instance))
                if status >= 300:
                    refusals.append(
                        Refusal(
                            status,
                            _is_json(response),
                            response.headers.get("retry-after"),
                            instance,
                            _error_of(response),
                            response.headers.get("x-request-id"),
                        )
                    )
                if method == "POST" and status == 201:
                    todo = response.json()
                    self.acknowledged.append(Acknowledged(id=str(todo["id"]), texto=str(todo["texto"])))
            except httpx.HTTPError as exc:
                status, instance, error = 0, None, f"{type(exc).__name__}: {exc}"
                response = None
            if first_status == -1:
                first_status = status
            retry = self.retries and (status == 0 or status in RETRYABLE)
            if not retry or self.now() + backoff > deadline:
                break
            wait = backoff
            if response is not None and response.headers.get("retry-after", "").isdigit():
                wait = min(float(response.headers["retry-after"]), 2.0)
            # Jittered, as careful clients do: the requests a fault failed together do not
            # all come back at the same instant.
            await asyncio.sleep(wait * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 1.0)
        return Outcome(
            index, method, started, self.now() - started, status, instance, attempts, first_status, error, served, refusals
        )

    # -- checks and report ---------------------------------------------

    def check_todos(self, listed: list[dict[str, Any]]) -> tuple[int, int]:
        """(lost, duplicated) acknowledged todos, given the final list."""
        ids = [str(t["id"]) for t in listed]
        textos = [str(t["texto"]) for t in listed if str(t["texto"]).startswith(f"load {self.tag} ")]
        lost = sum(1 for a in self.acknowledged if a.id not in ids)
        duplicated = len(textos) - len(set(textos))
        return lost, duplicated

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def percentile(self, q: float) -> float:
        latencies = sorted(o.latency for o in self.outcomes)
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    def served_times(self, instance: str) -> list[float]:
        return sorted(t for o in self.outcomes for t, who in o.served_by if who == instance)

    def isolation_times(
        self, instance: str, fault: str, recover: str | None, together: Sequence[LoadRun] = ()
    ) -> tuple[float | None, float | None]:
        """Seconds from `fault` to the sick instance's last answer, and from the moment it
        was ready again (the `ready` mark where the scenario knows it, else `recover`) to its
        first answer through the load balancer (None where it never happened).

        Answers to the runs `together` with this one count too: the load balancer isolates and
        readmits an instance for every client at once, and one client's own answers are a
        sample of its round robin. Two clients interleaved can each draw mostly one instance
        (a kill -9 run: careful 1620 answers from instance 1 and 380 from 2, naive 71 and
        1929), so one client alone may see a readmitted instance seconds after the other."""
        times = sorted(t + run._t0 - self._t0 for run in (self, *together) for t in run.served_times(instance))
        t_fault = self.marks.get(fault)
        t_recover = self.marks.get(recover) if recover else None
        t_ready = self.marks.get("ready", t_recover) if recover else None
        stopped = readmitted = None
        if t_fault is not None:
            end = t_recover if t_recover is not None else float("inf")
            during = [t for t in times if t_fault <= t < end]
            stopped = (during[-1] - t_fault) if during else 0.0
        if t_ready is not None:
            after = [t for t in times if t >= t_ready]
            readmitted = (after[0] - t_ready) if after else None
        return stopped, readmitted

    def report(
        self,
        name: str,
        lost: int,
        duplicated: int,
        instance: str | None = None,
        fault: str = "fault",
        recover: str | None = "recover",
        together: Sequence[LoadRun] = (),
    ) -> dict[str, Any]:
        stopped, readmitted = self.isolation_times(instance, fault, recover, together) if instance else (None, None)
        return {
            "scenario": f"{name} [{self.client}]",
            "client": self.client,
            "requests": len(self.outcomes),
            "keyless_posts": sum(1 for o in self.outcomes if o.keyed is False),
            "failures": len(self.failures()),
            # final status of each failed request -> count (0: no answer, a transport error)
            "failed_by": dict(sorted(Counter(o.status for o in self.failures()).items())),
            "retried": sum(1 for o in self.outcomes if o.attempts > 1),
            "refusals": dict(sorted(Counter(r.status for o in self.outcomes for r in o.refusals).items())),
            "lost": lost,
            "duplicated": duplicated,
            "p99_ms": round(self.percentile(0.99) * 1000, 1),
            "max_ms": round(max((o.latency for o in self.outcomes), default=0.0) * 1000, 1),
            "isolated_after_s": None if stopped is None else round(stopped, 2),
            "readmitted_after_s": None if readmitted is None else round(readmitted, 2),
            "by_instance": {
                i: sum(1 for o in self.outcomes if o.instance == i) for i in sorted({o.instance or "-" for o in self.outcomes})
            },
            "marks": {k: round(v, 2) for k, v in self.marks.items()},
            "note": "",
        }

    def first_ok_after(self, mark: str) -> float | None:
        """Seconds from `mark` to the first 2xx answer that came after it (None: none did)."""
        t_mark = self.marks[mark]
        answers = [o.answered for o in self.outcomes if o.ok and o.answered >= t_mark]
        return round(min(answers) - t_mark, 3) if answers else None

    def save(self, path: Path, report: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"report": report, "outcomes": [asdict(o) for o in self.outcomes]}, indent=1))


class NaiveRun(LoadRun):
    """A client that never retries (see the module's docstring): every other POST
    without an Idempotency-Key, `concurrency` (>= 16) connections used in turn.

    It waits as long as curl would for an answer (request_timeout 30 s, above
    NGINX's connect + read + next-upstream bounds): what it sees is what NGINX
    and the API answer, never its own impatience. retry_budget plays no part.
    """

    client: ClassVar[str] = "naive"
    retries: ClassVar[bool] = False
    in_turn: ClassVar[bool] = True
    CONNECTIONS: ClassVar[int] = 16

    def __init__(self, base_url: str, **shape: Unpack[LoadShape]) -> None:
        shape = {"concurrency": self.CONNECTIONS, "request_timeout": 30.0, **shape, "retry_budget": 0.0}
        if shape["concurrency"] < self.CONNECTIONS:
            raise ValueError(f"a naive run uses at least {self.CONNECTIONS} connections")
        super().__init__(base_url, **shape)

    def keyed(self, index: int) -> bool:
        """Every other POST (POSTs are every post_every-th request) carries a key."""
        return (index // self.post_every) % 2 == 0
