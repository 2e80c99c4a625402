"""The app on a replicated Redis under Sentinel: REAL redis-server processes on loopback (a
primary, a replica and three Sentinels, started by `redis-server --sentinel`), the app
in-process. What the durability promise and a failover look like from the app's side."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
import uvloop

from todo_api.app import create_public_app
from todo_api.config import Settings
from todo_api.runtime import Runtime
from todo_api.store import IDS, LIST, SENTINEL_TIMEOUT_S, SEQ_DIGITS, NewestEpochSentinel, TodoStore

from .conftest import free_port

MASTER = "halab"
# A lab that must fail over in seconds: a primary silent for 1 s is down for a Sentinel.
DOWN_AFTER_MS = 1000


def _exe() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server not installed (apt-get install -y redis-server)")
    return exe


def _wait(what: str, ok: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Proc:
    port: int
    conf: Path
    sentinel: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [_exe(), str(self.conf)] + (["--sentinel"] if self.sentinel else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(f"redis on {self.port}", lambda: bool(self.client().ping()))

    def kill(self) -> None:
        """kill -9: no goodbye to the replica or the Sentinels."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)


@dataclass
class Replicated:
    """A primary, its replica, three Sentinels (quorum 2), each with a config file of its own."""

    root: Path
    data: list[Proc] = field(default_factory=list)
    sentinels: list[Proc] = field(default_factory=list)

    def start(self) -> None:
        ports = [free_port() for _ in range(5)]
        primary = ports[0]
        for i, port in enumerate(ports[:2]):
            conf = self.root / f"redis-{port}.conf"
            lines = [f"port {port}", "bind 127.0.0.1", 'save ""', "appendonly yes",
                     f"dir {self.root}", f"appendfilename ao-{port}.aof",
                     f"appenddirname ao-{port}"]
            if i == 1:
                lines.append(f"replicaof 127.0.0.1 {primary}")
            conf.write_text("\n".join(lines) + "\n")
            self.data.append(Proc(port, conf))
        for port in ports[2:]:
            conf = self.root / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
            )
            self.sentinels.append(Proc(port, conf, sentinel=True))
        for p in self.data + self.sentinels:
            p.start()
        _wait("the replica in sync", lambda: self.data[1].client().info("replication")[
            "master_link_status"] == "up")
        _wait("the Sentinels to see each other and the replica", self.settled)

    def settled(self) -> bool:
        for s in self.sentinels:
            state = cast(dict[str, Any], s.client().sentinel_master(MASTER))
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    def named(self) -> set[int]:
        """The primary's port as each Sentinel names it."""
        return {int(cast(tuple[str, int], s.client().sentinel_get_master_addr_by_name(MASTER))[1])
                for s in self.sentinels}

    def primary_port(self) -> int:
        """The primary as the Sentinels name it, once all three agree (just after a failover
        the last one to hear of it may still name the old one)."""
        _wait("the Sentinels to agree on the primary", lambda: len(self.named()) == 1)
        return self.named().pop()

    def node(self, port: int) -> Proc:
        return next(p for p in self.data if p.port == port)

    def stop(self) -> None:
        for p in self.sentinels + self.data:
            p.kill()


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    r = Replicated(tmp_path)
    try:
        r.start()
        yield r
    finally:
        r.stop()


@pytest.fixture
async def ha_client(
    make_settings: Callable[..., Settings], replicated: Replicated
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings: Settings = make_settings(
        redis_url="redis://unused/0",  # the Sentinels name the primary
        redis_sentinels=tuple(("127.0.0.1", s.port) for s in replicated.sentinels),
        redis_timeout_ms=1000,
        redis_replica_wait_ms=500,
        redis_failover_wait_ms=8000,
    )
    rt = Runtime(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_public_app(rt)), base_url="http://test"
    ) as c:
        yield c, rt
    await rt.aclose()


async def _post(c: httpx.AsyncClient, text: str, **headers: str) -> httpx.Response:
    return await c.post("/api/todos", json={"texto": text}, headers=headers)


async def test_writes_go_to_the_primary_and_reach_the_replica_before_the_answer(
    ha_client: tuple[httpx.AsyncClient, Runtime], replicated: Replicated
) -> None:
    c, _ = ha_client
    r = await _post(c, "replicated")
    assert r.status_code == 201, r.text
    todo_id = r.json()["id"]
    # WAIT 1 in the same round trip: the replica holds it when the client has its 201
    primary = replicated.primary_port()
    replica = next(p for p in replicated.data if p.port != primary)
    assert replica.client().hexists(IDS, todo_id)
    health = (await c.get("/api/health")).json()
    assert (health["status"], health["replicas"]) == ("OK", 1), health


async def test_without_a_replica_writes_stand_on_the_primary_and_health_says_degraded(
    ha_client: tuple[httpx.AsyncClient, Runtime], replicated: Replicated
) -> None:
    c, rt = ha_client
    primary = replicated.primary_port()
    replica = next(p for p in replicated.data if p.port != primary)
    for _ in range(10):  # until a write saw the replica acknowledge (it then waits for it)
        assert (await _post(c, "replicated")).status_code == 201
        if rt.store.replicated_at is not None:
            break
    assert rt.store.replicated_at is not None, "no write saw the replica acknowledge"
    before = rt.store.unreplicated_writes
    replica.kill()
    started = time.monotonic()
    r = await _post(c, "only on the primary")
    waited = time.monotonic() - started
    assert r.status_code == 201, r.text
    assert waited >= 0.5, "the write waited for the replica first (REPLICA_WAIT_MS 500)"
    assert replicated.node(primary).client().hexists(IDS, r.json()["id"])
    assert rt.store.unreplicated_writes == before + 1
    # the replica is known gone: the next writes wait REPLICA_GONE_WAIT_MS for it, not 500 ms
    started = time.monotonic()
    for i in range(3):
        assert (await _post(c, f"still only on the primary {i}")).status_code == 201
    waited = time.monotonic() - started
    assert waited < 1.0, f"{waited:.2f} s for three writes: each waited for the gone replica"
    assert rt.store.unreplicated_writes == before + 4
    rt.health._redis_ok = None  # the next check asks Redis instead of its 0.5 s cache
    health = (await c.get("/api/health")).json()
    assert health["status"] == "DEGRADED" and health["replicas"] == 0, health
    assert any("no replica" in reason for reason in health["reasons"]), health
    metrics = (await c.get("/metrics")).text
    assert f"todo_api_redis_unreplicated_writes_total {before + 4}.0" in metrics
    replica.start()  # it resyncs from the primary; health is OK again
    _wait("the replica back", lambda: replica.client().info("replication")[
        "master_link_status"] == "up")
    await _post(c, "replicated again")

    async def healthy() -> bool:
        rt.health._redis_ok = None
        return bool((await c.get("/api/health")).json()["status"] == "OK")

    assert await healthy()


async def test_primary_killed_requests_ride_through_the_failover(
    ha_client: tuple[httpx.AsyncClient, Runtime], replicated: Replicated
) -> None:
    """kill -9 of the primary under a steady stream of keyed POSTs, LB-keyed POSTs and GETs:
    every request answers (none fails: each keeps looking for the primary), every
    acknowledged todo is on the promoted replica once, and the old primary, started again,
    rejoins as a replica with all of them."""
    c, rt = ha_client
    old = replicated.primary_port()
    acked: dict[str, str] = {}
    statuses: list[int] = []

    async def one(i: int) -> None:
        headers = ({"Idempotency-Key": uuid.uuid4().hex} if i % 2 else
                   {"X-Request-ID": uuid.uuid4().hex})
        r = await _post(c, f"todo {i}", **headers)
        statuses.append(r.status_code)
        if r.status_code == 201:
            acked[r.json()["id"]] = f"todo {i}"
        statuses.append((await c.get("/api/todos", params={"limit": 5})).status_code)

    async def stream(n: int, killed_at: int) -> float:
        killed = 0.0
        for i in range(n):
            if i == killed_at:
                replicated.node(old).kill()
                killed = time.monotonic()
            await asyncio.gather(one(2 * i), one(2 * i + 1))
        return killed

    started = time.monotonic()
    killed = await stream(30, killed_at=10)
    assert set(statuses) == {200, 201}, sorted(set(statuses))
    new = replicated.primary_port()
    assert new != old
    stored = replicated.node(new).client().hgetall(IDS)
    members = cast(list[bytes], replicated.node(new).client().zrange(LIST, 0, -1))
    texts = [json.loads(m[SEQ_DIGITS:])["texto"] for m in members]
    assert set(acked) <= set(stored), "acknowledged todos missing after the failover"
    assert len(texts) == len(set(texts)) == len(acked), "a todo stored twice"
    assert rt.store.failover_retries > 0, "the kill happened while requests were running"
    print(f"\nfailover: {len(acked)} todos acknowledged, 0 failed, {rt.store.failover_retries} "
          f"retries, stream {time.monotonic() - started:.1f} s, primary killed "
          f"{killed - started:.1f} s in")
    replicated.node(old).start()  # as a primary with its old AOF: the Sentinels demote it
    _wait("the old primary to rejoin as a replica", lambda: replicated.node(old).client().info(
        "replication")["role"] == "slave" and replicated.node(old).client().info(
        "replication")["master_link_status"] == "up", timeout=30)
    _wait("the rejoined node to hold every acknowledged todo",
          lambda: set(acked) <= set(replicated.node(old).client().hkeys(IDS)))


async def test_a_planned_switchover_loses_no_acknowledged_write(
    ha_client: tuple[httpx.AsyncClient, Runtime], replicated: Replicated
) -> None:
    """SENTINEL FAILOVER under a stream of keyed POSTs: the old primary takes writes until it
    is demoted, after its replica left it (WAIT answers 0). The app acknowledges none of
    those: every acknowledged todo is on the new primary, once."""
    c, rt = ha_client
    old = replicated.primary_port()
    acked: set[str] = set()
    statuses: list[int] = []
    done = asyncio.Event()

    async def writer() -> None:
        while not done.is_set():
            r = await _post(c, "w", **{"Idempotency-Key": uuid.uuid4().hex})
            statuses.append(r.status_code)
            if r.status_code == 201:
                acked.add(r.json()["id"])

    def switched() -> bool:
        node = replicated.node(old).client().info("replication")
        return replicated.named() == {replicated.primary_port()} != {old} and (
            node.get("master_link_status") == "up")

    async def switchover() -> None:
        await asyncio.sleep(0.5)
        sentinel = replicated.sentinels[0].client()
        assert sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)  # type: ignore[no-untyped-call]
        await asyncio.to_thread(_wait, "the switchover", switched, 30)
        await asyncio.sleep(1)
        done.set()

    await asyncio.gather(writer(), writer(), switchover())
    assert set(statuses) == {201}, sorted(set(statuses))
    new = replicated.primary_port()
    for port in (new, old):
        stored = set(replicated.node(port).client().hkeys(IDS))
        assert acked <= stored, f"{len(acked - stored)} acknowledged todos missing on {port}"
    print(f"\nswitchover: {len(acked)} acknowledged, {rt.store.unreplicated_writes} without a "
          f"replica, {rt.store.failover_retries} tried again")


async def test_a_dead_sentinel_costs_a_quarter_second_not_a_request(
    ha_client: tuple[httpx.AsyncClient, Runtime], replicated: Replicated
) -> None:
    """One Sentinel gone: asking the others which node is the primary stays fast (redis-py's
    own retries of a dead Sentinel took over a second for every question)."""
    _, rt = ha_client
    primary = replicated.primary_port()
    replicated.sentinels[0].kill()
    sentinel = rt.store.sentinel
    assert isinstance(sentinel, NewestEpochSentinel)
    started = time.monotonic()
    address = await sentinel.discover_master(MASTER)
    took = time.monotonic() - started
    assert address == ("127.0.0.1", primary)
    assert took < 0.6, f"{took:.2f} s to ask two live Sentinels and a dead one"


async def test_a_sentinel_gone_silent_is_not_waited_for_again(
    ha_client: tuple[httpx.AsyncClient, Runtime], replicated: Replicated
) -> None:
    """A Sentinel that left a question unanswered (SIGSTOP: its node gone, as its askers see
    it) costs the next questions SILENT_GRACE_S, not SENTINEL_TIMEOUT_S each (while its data
    node is gone, every write asks), and is heard again once it answers."""
    _, rt = ha_client
    sentinel = rt.store.sentinel
    assert isinstance(sentinel, NewestEpochSentinel)
    assert len(await sentinel.views(MASTER)) == 3
    away = replicated.sentinels[0].proc
    assert away is not None
    away.send_signal(signal.SIGSTOP)
    try:
        assert len(await sentinel.views(MASTER)) == 2  # waited SENTINEL_TIMEOUT_S for it
        assert sentinel.silent == {0}
        started = time.monotonic()
        for _ in range(5):
            assert len(await sentinel.views(MASTER)) == 2
        took = (time.monotonic() - started) / 5
        assert took < SENTINEL_TIMEOUT_S / 2, f"{took:.3f} s a question: the silent one waited for"
    finally:
        away.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 5
    while len(await sentinel.views(MASTER)) < 3:
        assert time.monotonic() < deadline, "the Sentinel answers again but is not heard"
        await asyncio.sleep(0.1)
    assert sentinel.silent == set()


def _lone_sentinel(root: Path, primary: int, epoch: int) -> Proc:
    """A Sentinel of its own that names ``primary`` at configuration epoch ``epoch``."""
    port = free_port()
    conf = root / f"lone-{port}.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {root}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary} 1\n"
        f"sentinel config-epoch {MASTER} {epoch}\n"
    )
    return Proc(port, conf, sentinel=True)


async def test_the_newest_configuration_epoch_wins_over_the_first_answer(
    tmp_path: Path, own_redis: Any, redis_server: Any
) -> None:
    """Two Sentinels disagree (one was cut off through a failover): redis-py's Sentinel trusts
    the first to answer; the app's trusts the one that saw the later failover."""
    stale = _lone_sentinel(tmp_path, own_redis.port, epoch=0)
    fresh = _lone_sentinel(tmp_path, redis_server.port, epoch=3)
    for s in (stale, fresh):
        s.start()
    try:
        addresses = [("127.0.0.1", stale.port), ("127.0.0.1", fresh.port)]
        stock = redis.asyncio.sentinel.Sentinel(addresses)  # type: ignore[no-untyped-call]
        assert (await stock.discover_master(MASTER))[1] == own_redis.port  # the stale answer
        newest = NewestEpochSentinel(addresses)
        assert await newest.discover_master(MASTER) == ("127.0.0.1", redis_server.port)
        for sentinel in (stock, newest):
            await sentinel.aclose()
    finally:
        for s in (stale, fresh):
            s.kill()



@pytest.mark.parametrize("fault", ["silent", "restarted", "closed under us"])
def test_a_sentinel_that_was_away_is_asked_again_once_it_answers(
    replicated: Replicated, fault: str
) -> None:
    """A Sentinel away costs the questions asked meanwhile their answer, and no more: once it
    answers again, so does the next question. Silent: SIGSTOP (a pulled plug, as its askers
    see it); restarted: killed and started between two questions; closed under us: our
    pooled socket's transport closed while redis-py still holds it as connected, as found in
    the lab, where uvloop (the lab's event loop, used here) raised RuntimeError on the next
    write and every request that asked the Sentinels answered 500."""
    away = replicated.sentinels[0]

    async def scenario() -> None:
        sentinel = NewestEpochSentinel(
            [("127.0.0.1", away.port)], sentinel_kwargs={"socket_timeout": 1.0}
        )
        try:
            assert await sentinel.views(MASTER), "the Sentinel did not answer at first"
            if fault == "silent":
                assert away.proc is not None
                away.proc.send_signal(signal.SIGSTOP)
                try:
                    assert await sentinel.views(MASTER) == []
                finally:
                    away.proc.send_signal(signal.SIGCONT)
            elif fault == "restarted":
                away.kill()
                away.start()
            else:
                pool = sentinel.sentinels[0].connection_pool
                pooled = [c for c in pool._available_connections if c.is_connected]
                assert pooled, "no pooled socket to the Sentinel"
                for connection in pooled:
                    assert connection._writer is not None
                    connection._writer.transport.abort()
                await asyncio.sleep(0.05)
                assert all(c.is_connected for c in pooled)  # redis-py has not noticed
                await sentinel.views(MASTER)  # may go unanswered, must not raise
            for _ in range(3):
                assert await sentinel.views(MASTER), "the Sentinel answers again but not to us"
        finally:
            await sentinel.aclose()

    uvloop.run(scenario())


async def test_with_no_sentinel_answering_the_known_primary_keeps_serving(
    ha_client: tuple[httpx.AsyncClient, Runtime], replicated: Replicated
) -> None:
    """Every Sentinel silent (SIGSTOP) and every pooled connection dropped, so each request
    needs a new one: reads and writes still go to the primary the Sentinels named last
    (an instance short of CPU missed every Sentinel's 0.25 s at once in the lab: 500s)."""
    c, rt = ha_client
    assert (await _post(c, "before the Sentinels go silent")).status_code == 201
    for s in replicated.sentinels:
        assert s.proc is not None
        s.proc.send_signal(signal.SIGSTOP)
    try:
        await rt.store.pool.disconnect()
        created = await _post(c, "while no Sentinel answers")
        listed = await c.get("/api/todos")
    finally:
        for s in replicated.sentinels:
            assert s.proc is not None
            s.proc.send_signal(signal.SIGCONT)
    assert created.status_code == 201, created.text
    assert listed.status_code == 200 and any(
        t["texto"] == "while no Sentinel answers" for t in listed.json()
    ), listed.text[:300]


async def test_a_connection_attempt_has_its_own_shorter_timeout(
    make_settings: Callable[..., Settings],
) -> None:
    """A vanished primary is silent: each try to reach it costs the connect timeout, not the
    command timeout (which must outlast the replica WAIT). 0 keeps the command timeout."""
    sentinels = (("127.0.0.1", free_port()),)
    store = TodoStore(
        make_settings(
            redis_sentinels=sentinels, redis_timeout_ms=1000, redis_connect_timeout_ms=250
        )
    )
    plain = TodoStore(make_settings(redis_timeout_ms=1000))
    try:
        assert (store.pool.timeout, store.pool.connect_timeout) == (1.0, 0.25)
        assert plain.pool.connect_timeout == 1.0
    finally:
        await store.close()
        await plain.close()
