"""The data path against any client (issue 13): a keyless POST while Redis stalls,
and bounded reads with 200,000 todos stored while an instance is killed.

Redis is reached as the operators' user on its node (PROBES.redis_admin); the
stored layout is the API's (app/src/todo_api/store.py): hash todos:ids (id ->
creation sequence, an INCR of todos:seq), sorted set todos:list (the sequence in 16 hex
digits then the todo's JSON, scored by the sequence).
Timing goals are printed figures; the asserts are about correctness.
Run one alone: `pytest tests/failover -k stall` or `-k bounded`.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support.model import API_GROUP, INSTANCE_NODE, PUBLIC_URL, TOPO
from tests.support.wait import wait_until

from .scenario import PROBES, assert_clean, finish, load, mark_ready, unit_time

pytestmark = pytest.mark.usefixtures("healthy")

SICK = str(TOPO.instances[0].id)
UNIT = f"todo-api@{SICK}"

# The API's keys in Redis (app/src/todo_api/store.py: IDS, LIST, SEQ).
IDS, LIST, SEQ = "todos:ids", "todos:list", "todos:seq"

# A busy script: polls TIME until ARGV[1] microseconds have passed (or ARGV[2]
# polls, a bound in case TIME stood still inside a script); returns the polls.
STALL_LUA = """
local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = 0
repeat
  local now = redis.call('TIME')
  n = n + 1
until tonumber(now[1]) * 1000000 + tonumber(now[2]) - start >= tonumber(ARGV[1]) or n >= tonumber(ARGV[2])
return n
"""
STALL_US = 1_500_000
STALL_CAP = 20_000_000  # polls: far more than 1.5 s of TIME calls
STALL_TRIALS = 20

# 200,000 todos in the API's shape, ARGV[3] at a time (ids: an 8-hex prefix and a
# 24-hex counter, 32 hex like the API's uuid4().hex); and their removal.
SEED_LUA = """
local n0, count = tonumber(ARGV[2]), tonumber(ARGV[3])
for n = n0, n0 + count - 1 do
  local id = ARGV[1] .. string.format('%024x', n)
  local seq = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[1], id, seq)
  redis.call('ZADD', KEYS[2], seq, string.format('%016x', seq) .. cjson.encode({id = id,
    texto = 'seed ' .. ARGV[1] .. ' #' .. n, completada = false, createdAt = ARGV[4], instance = 'seed'}))
end
return count
"""
UNSEED_LUA = """
local n0, count = tonumber(ARGV[2]), tonumber(ARGV[3])
for n = n0, n0 + count - 1 do
  local id = ARGV[1] .. string.format('%024x', n)
  local seq = redis.call('HGET', KEYS[1], id)
  if seq then redis.call('ZREMRANGEBYSCORE', KEYS[2], seq, seq) end
  redis.call('HDEL', KEYS[1], id)
end
return count
"""
SEEDED = 200_000
BATCH = 500  # todos a script call: a few milliseconds of Redis each
SLOWLOG_US = 10_000  # the printed figure: the API's commands over 10 ms during the load
PAGE = 100  # what the sampler asks for: the page's own size
SORTED_SET_RANGES = ("ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE")
# Reads that walk a whole key, whatever its size: never from the API.
WHOLE_KEY_READS = {"HGETALL", "HKEYS", "HVALS", "KEYS", "SMEMBERS", "SCAN", "HSCAN", "SSCAN", "ZSCAN", "SORT"}
# SLOWLOG keeps 32 arguments of a command; the last one it shows then says how many it left out.
SLOWLOG_MORE_ARGS = re.compile(r"^\.\.\. \((\d+) more arguments\)$")


def put_file(path: str, text: str) -> None:
    """A file on the Redis node (base64 on the way: no quoting through ssh and sh)."""
    encoded = base64.b64encode(text.encode()).decode()
    PROBES.redis_node(f"echo {encoded} | base64 -d > {path}")


# -- a keyless POST while Redis is busy -----------------------------------------


def test_keyless_post_during_a_redis_stall_is_never_stored_twice() -> None:
    """Issue 13's reproduction: a 1.5 s busy script on Redis while a POST without a
    key goes through NGINX, as curl sends it (no key, no retry). 20 trials: none
    may be stored twice; none acknowledged may be missing. Printed: how many got
    201, 503, and were stored without being acknowledged (the API's Redis call
    timed out after it was sent: the refusal says "retry", the todo is there)."""
    sha = PROBES.redis_admin(f"SCRIPT LOAD {shlex.quote(STALL_LUA)}").stdout.strip().splitlines()[-1]
    tag = uuid.uuid4().hex[:8]
    trials: list[dict[str, Any]] = []
    stored_ids: set[str] = set()
    try:
        for i in range(STALL_TRIALS):
            texto = f"stall {tag} #{i}"
            out = f"/tmp/halab-stall-{tag}-{i}.out"
            # Started in the background on the node: on_node returns while Redis is busy.
            PROBES.redis_admin(f"EVALSHA {sha} 0 {STALL_US} {STALL_CAP} > {out} 2>&1 & sleep 0.1")
            started = time.monotonic()
            with httpx.Client(base_url=PUBLIC_URL, timeout=30) as client:
                try:
                    response = client.post("/api/todos", json={"texto": texto})
                    status, instance, body = response.status_code, response.headers.get("x-instance"), response.text
                except httpx.HTTPError as exc:
                    status, instance, body = 0, None, f"{type(exc).__name__}: {exc}"
            latency = time.monotonic() - started
            time.sleep(max(0.0, started + STALL_US / 1e6 + 0.5 - time.monotonic()))  # the stall is over
            newest = PROBES.newest()
            stored = [t for t in newest if t["texto"] == texto]
            stored_ids |= {str(t["id"]) for t in stored}
            trials.append({"status": status, "latency": latency, "stored": len(stored), "instance": instance, "body": body})
        polls = PROBES.redis_node(f"cat /tmp/halab-stall-{tag}-*.out").stdout.split()
    finally:
        PROBES.redis_node(f"rm -f /tmp/halab-stall-{tag}-*.out", check=False)
        PROBES.forget(stored_ids)
    statuses = [t["status"] for t in trials]
    twice = [i for i, t in enumerate(trials) if t["stored"] > 1]
    unacknowledged = sum(1 for t in trials if t["status"] != 201 and t["stored"])
    lost = [i for i, t in enumerate(trials) if t["status"] == 201 and not t["stored"]]
    met = sum(1 for t in trials if t["latency"] >= 0.3)
    print(
        f"\nredis stall x{STALL_TRIALS}: 201 x{statuses.count(201)}, 503 x{statuses.count(503)}, "
        f"other {[s for s in statuses if s not in (201, 503)]}; stored but not acknowledged x{unacknowledged}; "
        f"stored twice x{len(twice)}; {met} POSTs met the stall (>= 0.3 s); "
        f"latencies s {[round(t['latency'], 2) for t in trials]}; script polls {polls}"
    )
    assert all(p.isdigit() and int(p) < STALL_CAP for p in polls), f"the stall script did not end on time: {polls}"
    assert met >= STALL_TRIALS // 2, f"only {met} of {STALL_TRIALS} POSTs met the stall: the trial tested little"
    assert not twice, f"trials {twice} stored twice: {[trials[i] for i in twice]}"
    assert not lost, f"trials {lost} were acknowledged (201) but not stored"
    # A refusal is a clear one: the API's JSON 503 (storage unavailable) with Retry-After.
    assert set(statuses) <= {201, 503}, trials


# -- bounded reads at scale -------------------------------------------------------


@dataclass
class Sampler:
    """GET /api/todos?limit=100 one after another, `every` seconds apart; bounded in
    count and time. Latency per request (s), status, and the size of each page."""

    every: float = 0.05
    total: int = 2000
    max_seconds: float = 120.0
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Sampler:
        self._stop.set()
        if self._thread:
            self._thread.join(30)
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=PUBLIC_URL, timeout=10) as client:
            while len(self.samples) < self.total and time.monotonic() < deadline and not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.get(f"/api/todos?limit={PAGE}")
                    size = len(response.json()) if response.status_code == 200 else -1
                    self.samples.append((time.monotonic() - started, response.status_code, size))
                except (httpx.HTTPError, ValueError):
                    self.samples.append((time.monotonic() - started, 0, -1))
                self._stop.wait(max(0.0, started + self.every - time.monotonic()))

    def figures(self) -> str:
        ok = sorted(latency for latency, status, _ in self.samples if status == 200)
        if not ok:
            return f"sampler: {len(self.samples)} GETs, none answered 200"

        def ms(q: float) -> float:
            return round(ok[min(len(ok) - 1, int(q * len(ok)))] * 1000, 1)

        return (
            f"GET ?limit={PAGE} x{len(self.samples)} ({len(ok)} ok): p50 {ms(0.5)} ms, p99 {ms(0.99)} ms, "
            f"max {round(ok[-1] * 1000, 1)} ms"
        )


def test_bounded_reads_with_200k_todos_during_a_kill_9() -> None:
    """200,000 todos stored (seeded straight into Redis, in batches), both clients'
    failover load with a kill -9 of instance 1, and a sampler reading the newest
    page meanwhile: its p50/p99/max are printed (the issue's goal: p99 < 50 ms), and so
    are the API's commands that Redis' SLOWLOG saw over 10 ms during the load (a figure:
    a busy 2-CPU host makes a 0.5 ms page script take 13 ms). What is asserted is the
    shape of a page read, whatever the host: every command the API sends for it (the
    script's own included, SLOWLOG at 0 µs) reads at most a page plus one, never a whole
    key. The clients see what they see in test_process_faults (nothing failed, lost or
    doubled)."""
    prefix = uuid.uuid4().hex[:8]
    created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    before = PROBES.redis_admin("CONFIG GET slowlog-log-slower-than").stdout.split()
    slowlog_before = before[-1] if len(before) == 2 else None
    batches = range(1, SEEDED + 1, BATCH)
    try:
        sha = PROBES.redis_admin(f"SCRIPT LOAD {shlex.quote(SEED_LUA)}").stdout.strip().splitlines()[-1]
        started = time.monotonic()
        seeded = PROBES.redis_admin("", feed=evalsha_lines(sha, prefix, batches, created), timeout=900).stdout.split()
        print(f"\nseeded {SEEDED} todos in {len(seeded)} calls of {BATCH}: {time.monotonic() - started:.1f} s")
        assert seeded and all(n == str(BATCH) for n in seeded), seeded[:10]
        first_page = httpx.get(f"{PUBLIC_URL}/api/todos?limit={PAGE}", timeout=10)
        assert first_page.status_code == 200 and len(first_page.json()) == PAGE, first_page.text[:500]
        assert int(first_page.headers.get("x-total-count", "0")) >= SEEDED, dict(first_page.headers)
        page_reads = commands_of_a_page_read()
        unbounded = [e["args"][:6] for e in page_reads if not bounded(e["args"])]
        assert any(e["args"][0].upper() in SORTED_SET_RANGES for e in page_reads), [e["args"][:6] for e in page_reads]
        assert not unbounded, f"a page read of {PAGE} sent commands that read more than a page: {unbounded}"

        PROBES.redis_admin(f"CONFIG SET slowlog-log-slower-than {SLOWLOG_US}")
        PROBES.redis_admin("SLOWLOG RESET")
        run = load()
        sampler = Sampler().start()
        time.sleep(3)
        run.mark("fault")
        PROBES.on_instance(SICK, f"kill -9 $(systemctl show -p MainPID --value {UNIT})")
        run.mark("recover")
        wait_until(f"instance {SICK} healthy", lambda: PROBES.instance_healthy(SICK), timeout=60)
        run.mark_at("fault", unit_time(SICK, "ActiveExitTimestamp"))
        mark_ready(run, SICK)
        for one in run:
            one.wait()
        sampler.stop()
        slow = slowlog_entries()
        figures = sampler.figures()
        careful, naive = finish(run, "200k stored: kill -9", sick=SICK, note=lambda _: figures)
        from_api = from_api_nodes(slow)
        print(f"\n{figures}; SLOWLOG over {SLOWLOG_US // 1000} ms: {len(slow)} entries, {len(from_api)} from the API")
        for entry in slow[:20]:
            print(f"  {entry['us']} us {entry['client']} {' '.join(entry['args'])[:100]}")
        assert all(size == PAGE for _, status, size in sampler.samples if status == 200), "a page was not 100 todos"
        assert_clean(careful, run.careful)
        assert_clean(naive, run.naive)
    finally:
        unseed = PROBES.redis_admin(f"SCRIPT LOAD {shlex.quote(UNSEED_LUA)}", check=False).stdout.strip().splitlines()
        if unseed:
            PROBES.redis_admin("", feed=evalsha_lines(unseed[-1], prefix, batches, created), timeout=900, check=False)
        if slowlog_before is not None:
            PROBES.redis_admin(f"CONFIG SET slowlog-log-slower-than {slowlog_before}", check=False)


def evalsha_lines(sha: str, prefix: str, batches: range, created: str) -> str:
    """A shell loop on the node printing one EVALSHA a batch (redis-cli answers each before the next)."""
    return (
        f"for n in $(seq {batches.start} {batches.step} {batches.stop - 1}); do "
        f"echo EVALSHA {sha} 3 {IDS} {LIST} {SEQ} {prefix} $n {batches.step} {created}; done"
    )


def commands_of_a_page_read() -> list[dict[str, Any]]:
    """What the API sends Redis for one GET ?limit=PAGE through NGINX. SLOWLOG at 0 µs logs
    every command; a script's own commands come first, from the script's client ("?:0"),
    then the EVAL/EVALSHA that ran them, from its caller: they are given the caller's address."""
    PROBES.redis_admin("CONFIG SET slowlog-log-slower-than 0")
    try:
        PROBES.redis_admin("SLOWLOG RESET")
        page = httpx.get(f"{PUBLIC_URL}/api/todos?limit={PAGE}", timeout=10)
        assert page.status_code == 200 and len(page.json()) == PAGE, page.text[:500]
        entries = slowlog_entries()
    finally:
        PROBES.redis_admin(f"CONFIG SET slowlog-log-slower-than {SLOWLOG_US}")
    attributed: list[dict[str, Any]] = []
    from_script: list[dict[str, Any]] = []
    for entry in reversed(entries):  # SLOWLOG GET gives the newest first
        if entry["client"].startswith("?:"):
            from_script.append(entry)
            continue
        if entry["args"][0].upper() in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"):
            attributed += [e | {"client": entry["client"]} for e in from_script]
        from_script = []
        attributed.append(entry)
    return from_api_nodes(attributed)


def from_api_nodes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    api_nodes = {n.address for n in TOPO.group(API_GROUP)}
    return [e for e in entries if e["client"].rsplit(":", 1)[0] in api_nodes]


def bounded(args: list[str]) -> bool:
    """Whether a command, as SLOWLOG shows it, reads at most PAGE + 1 elements: no whole-key
    read, a sorted-set range with a LIMIT (or an index range) of at most PAGE + 1, an HMGET
    of at most PAGE + 1 fields. Other commands (writes, INCR, ZCARD, EVALSHA) read none."""
    command, upper = args[0].upper(), [a.upper() for a in args]
    if command in WHOLE_KEY_READS:
        return False
    if command in SORTED_SET_RANGES:
        if "LIMIT" in upper:
            return int(args[upper.index("LIMIT") + 2]) in range(0, PAGE + 2)
        by_index = command in ("ZRANGE", "ZREVRANGE") and not {"BYSCORE", "BYLEX"} & set(upper)
        return by_index and 0 <= int(args[2]) <= int(args[3]) < int(args[2]) + PAGE + 1
    if command == "HMGET":
        more = SLOWLOG_MORE_ARGS.match(args[-1])
        fields = len(args) - 2 + (int(more.group(1)) - 1 if more else 0)
        return fields <= PAGE + 1
    return True


def slowlog_entries() -> list[dict[str, Any]]:
    """SLOWLOG GET as dicts: microseconds, arguments, client address (host:port)."""
    raw = PROBES.redis_admin("--json SLOWLOG GET 128").stdout
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise AssertionError(f"redis-cli --json SLOWLOG GET gave no JSON: {raw[:500]}") from exc
    return [{"us": int(e[2]), "args": [str(a) for a in e[3]], "client": str(e[4])} for e in entries]


def test_redis_full_refuses_writes_clearly_and_ejects_no_instance() -> None:
    """Redis at maxmemory (noeviction): writes get the API's own JSON 507 "storage full",
    reads keep working, and NGINX keeps both instances (507 is neither retried nor
    counted: an instance is not sick because the shared Redis is full)."""
    before = PROBES.redis_admin("CONFIG GET maxmemory").stdout.split()[-1]
    statuses: list[tuple[int, str, str | None]] = []
    try:
        PROBES.redis_admin("CONFIG SET maxmemory 1")
        with httpx.Client(base_url=PUBLIC_URL, timeout=10) as client:
            for n in range(6):  # more than max_fails per instance, were they counted
                r = client.post("/api/todos", json={"texto": f"while Redis is full {uuid.uuid4().hex[:8]} #{n}"})
                statuses.append((r.status_code, r.json().get("error", ""), r.headers.get("retry-after")))
            served = {client.get("/api/todos?limit=1").headers.get("x-instance") for _ in range(10)}
            health = client.get("/api/health").json()
    finally:
        PROBES.redis_admin(f"CONFIG SET maxmemory {before}")
    print(f"\nredis full: POSTs {statuses}; GETs served by {sorted(str(s) for s in served)}; health {health['status']}")
    assert all(s == 507 and e == "storage full" and ra for s, e, ra in statuses), statuses
    assert served == set(INSTANCE_NODE), f"an instance was ejected while Redis was full: GETs served by {served}"
    assert health["status"] == "OK" and health["redis"] == "ok", health
