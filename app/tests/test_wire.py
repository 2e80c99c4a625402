"""wire.Pool, the store's pipelined Redis client, against a REAL redis-server (under uvloop,
the instance's event loop): order under concurrency, cancellation, timeouts, a closed
connection, AUTH, NOSCRIPT, a node that became a replica."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest
import redis
import uvloop
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from todo_api.store import READ_CONNECTIONS
from todo_api.wire import Address, NotPrimaryError, Pool

from .conftest import RedisServer, free_port


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(scenario())


def pool_for(port: int, **kw: Any) -> Pool:
    async def locate() -> Address:
        return ("127.0.0.1", port)

    kw.setdefault("timeout", 1.0)
    kw.setdefault("connect_timeout", 1.0)
    return Pool(locate, **kw)


@pytest.fixture
def server(own_redis: RedisServer) -> RedisServer:
    return own_redis


def test_replies_match_their_commands_under_concurrency_and_cancellation(
    server: RedisServer,
) -> None:
    async def scenario() -> None:
        pool = pool_for(server.port, readers=2, writers=2)
        try:
            await asyncio.gather(*(pool.call("w", "SET", f"k{i}", i) for i in range(300)))
            got = await asyncio.gather(*(pool.call("r", "GET", f"k{i}") for i in range(300)))
            assert got == [str(i).encode() for i in range(300)]
            # a cancelled caller: its reply is read and dropped, the connection stays in step
            task = asyncio.ensure_future(pool.call("r", "GET", "k7"))
            await asyncio.sleep(0)
            task.cancel()
            assert [await pool.call("r", "GET", "k8") for _ in range(4)] == [b"8"] * 4
            replies, where = await pool.pipeline(
                "w", [("GET", "k1"), ("EVALSHA", "0" * 40, 0), ("INCR", "k2")]
            )
            assert replies[0] == b"1" and isinstance(replies[1], NoScriptError)
            assert replies[2] == 3 and where == ("127.0.0.1", server.port)
        finally:
            await pool.disconnect()

    run(scenario)


def test_a_silent_redis_times_out_and_the_pool_recovers(server: RedisServer) -> None:
    """SIGSTOP: every command waiting on the connection fails within the timeout (no hang),
    and once Redis answers again so do the next commands."""

    async def scenario() -> None:
        pool = pool_for(server.port, timeout=0.3, readers=1)
        try:
            assert await pool.call("r", "PING") == b"PONG"
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                results = await asyncio.gather(
                    *(pool.call("r", "PING") for _ in range(5)), return_exceptions=True
                )
                took = time.monotonic() - started
            finally:
                server.proc.send_signal(signal.SIGCONT)
            assert all(isinstance(r, RedisTimeoutError) for r in results), results
            assert 0.25 < took < 0.8, took
            assert await pool.call("r", "PING") == b"PONG"
        finally:
            await pool.disconnect()

    run(scenario)


def test_commands_of_one_loop_iteration_share_one_write(server: RedisServer) -> None:
    """What many requests send in the same loop iteration goes out in one write, and each
    still gets its own reply."""

    async def scenario() -> None:
        pool = pool_for(server.port, readers=1)
        try:
            assert await pool.call("r", "PING") == b"PONG"  # the connection is open
            conn = pool.slots["r"][0]
            assert conn is not None and conn.transport is not None
            transport, writes = conn.transport, []
            real_write = transport.write

            def counting_write(data: bytes) -> None:
                writes.append(data)
                real_write(data)

            conn.transport = cast(asyncio.Transport, _Spy(transport, counting_write))
            got = await asyncio.gather(*(pool.call("r", "ECHO", f"e{i}") for i in range(50)))
            assert got == [f"e{i}".encode() for i in range(50)]
            assert len(writes) == 1 and writes[0].count(b"ECHO") == 50
        finally:
            await pool.disconnect()

    run(scenario)


class _Spy:
    """A transport whose write is counted; everything else is the real one's."""

    def __init__(self, real: asyncio.Transport, write: Callable[[bytes], None]) -> None:
        self._real = real
        self.write = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_silent_node_is_left_at_its_first_timeout(server: RedisServer) -> None:
    """A primary whose plug is pulled sends no reset: every connection to it is silent. One
    timeout must leave them all and locate the primary again, not cost one timeout per pooled
    connection (the lab saw writes fail for 24 s after a failover that took 4 s)."""
    new = RedisServer(free_port())
    new.start()
    failed_over = False

    async def locate() -> Address:
        return ("127.0.0.1", new.port if failed_over else server.port)

    async def scenario() -> None:
        nonlocal failed_over
        pool = Pool(locate, timeout=0.3, connect_timeout=1.0, writers=4)
        proc = server.proc
        assert proc is not None
        try:
            await asyncio.gather(*(pool.call("w", "PING") for _ in range(8)))  # 4 connections
            proc.send_signal(signal.SIGSTOP)
            failed_over = True
            with pytest.raises(RedisTimeoutError):
                await pool.call("w", "SET", "k", "lost")
            # every next write goes to the new primary, none to another silent socket
            for i in range(4):
                assert await pool.call("w", "SET", "k", i) == b"OK"
            assert new.client().get("k") == b"3"
        finally:
            proc.send_signal(signal.SIGCONT)
            await pool.disconnect()

    try:
        run(scenario)
    finally:
        new.stop()


def test_connections_opening_together_share_one_locate(server: RedisServer) -> None:
    """Every slot of an empty pool opening at once (a failover, a start under load) asks
    locate() once, not once per slot; a failed locate fails its waiters and the next opening
    asks again."""
    calls = 0
    fail = True

    async def locate() -> Address:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        if fail:
            raise RedisConnectionError("no Sentinel answered")
        return ("127.0.0.1", server.port)

    async def scenario() -> None:
        nonlocal fail
        pool = Pool(locate, timeout=1.0, connect_timeout=1.0, readers=4, writers=8)
        try:
            failed = await asyncio.gather(
                *(pool.call("w", "PING") for _ in range(8)), return_exceptions=True
            )
            assert all(isinstance(r, RedisConnectionError) for r in failed), failed
            assert calls == 1
            fail = False
            replies = await asyncio.gather(
                *(pool.call(g, "PING") for g in ("r", "w") for _ in range(8))
            )
            assert replies == [b"PONG"] * 16
            assert calls == 2
        finally:
            await pool.disconnect()

    run(scenario)


def test_a_connection_closed_by_redis_is_replaced(server: RedisServer) -> None:
    async def scenario() -> None:
        pool = pool_for(server.port, readers=1)
        try:
            assert await pool.call("r", "PING") == b"PONG"
            server.client().client_kill_filter(_type="normal")
            await asyncio.sleep(0.05)  # the loop hears of it
            assert await pool.call("r", "PING") == b"PONG"
        finally:
            await pool.disconnect()

    run(scenario)


def test_redis_down_is_a_connection_error_at_once() -> None:
    async def scenario() -> None:
        pool = pool_for(free_port())
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await pool.call("r", "PING")
        assert time.monotonic() - started < 0.5

    run(scenario)


def test_acl_user_and_password(server: RedisServer) -> None:
    admin = server.client()
    admin.acl_setuser("app", enabled=True, passwords=["+s3cret"], commands=["+@all"], keys=["*"])

    async def scenario() -> None:
        good = pool_for(server.port, username="app", password="s3cret", db=1)
        bad = pool_for(server.port, username="app", password="wrong")
        try:
            await good.call("w", "SET", "in-db-1", "x")
            assert redis.Redis(port=server.port, db=1).get("in-db-1") == b"x"
            with pytest.raises(AuthenticationError):
                await bad.call("r", "PING")
        finally:
            await good.disconnect()
            await bad.disconnect()

    run(scenario)


def test_a_read_is_not_held_behind_a_write_wait(server: RedisServer) -> None:
    """No replica: WAIT 1 holds its (write) connection for its whole timeout; reads go on."""

    async def scenario() -> None:
        pool = pool_for(server.port, timeout=2.0)
        try:
            wait = asyncio.ensure_future(pool.call("w", "WAIT", 1, 500))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            assert await pool.call("r", "PING") == b"PONG"
            assert time.monotonic() - started < 0.1
            assert await wait == 0
        finally:
            await pool.disconnect()

    run(scenario)


def test_a_node_that_became_a_replica_is_left(
    server: RedisServer, redis_server: RedisServer
) -> None:
    """READONLY from a demoted node: NotPrimaryError (nothing was written), the connection is
    closed, and a pool that moved to the new primary retires connections to the old one."""
    node = server.client()
    node.replicaof("127.0.0.1", redis_server.port)
    try:

        async def scenario() -> None:
            pool = pool_for(server.port, readers=1, writers=1, leave_replicas=True)
            try:
                assert await pool.call("r", "PING") == b"PONG"
                conn = pool.slots["r"][0]
                with pytest.raises(NotPrimaryError):
                    await pool.call("w", "SET", "x", "1")
                pool.moved_to(("127.0.0.1", redis_server.port))
                assert conn is not None and not conn.alive
            finally:
                await pool.disconnect()

        run(scenario)
    finally:
        node.replicaof("no", "one")


def _waits(rdb: redis.Redis) -> int:
    """WAIT commands Redis has run (INFO commandstats)."""
    return int(rdb.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


@pytest.mark.parametrize("replica_wait_ms", [0, 20])
async def test_concurrent_writes_share_connections_and_a_wait(
    make_client: Callable[..., Any], rdb: redis.Redis, replica_wait_ms: int
) -> None:
    """48 concurrent POSTs share the store's few connections either way. Without
    replica_wait_ms they pipeline like reads and WAIT for nothing; with it they commit as a
    group: the writes of one loop iteration on one connection, one WAIT after them all (no
    replica here, so each WAIT lasts its timeout: once per group, not once per write)."""
    before = {c["id"] for c in rdb.client_list()}
    client, _ = await make_client(redis_replica_wait_ms=replica_wait_ms)
    waits = _waits(rdb)
    posts = [client.post("/api/todos", json={"texto": f"t{i}"}) for i in range(48)]
    assert {r.status_code for r in await asyncio.gather(*posts)} == {201}
    assert rdb.hlen("todos:ids") == 48
    opened = [c for c in rdb.client_list() if c["id"] not in before]
    assert len(opened) <= READ_CONNECTIONS, opened
    if replica_wait_ms:
        assert 1 <= _waits(rdb) - waits <= 4, _waits(rdb) - waits  # one per write was 48
    else:
        assert _waits(rdb) == waits


def test_a_group_commit_gives_each_write_its_own_reply(server: RedisServer) -> None:
    """Pool.replicated: the writes of one loop iteration go out with one WAIT; each caller gets
    its own command's reply (an error as a value, the others unharmed) and the WAIT's; one
    cancelled meanwhile takes nothing from the others."""
    rdb = server.client()
    rdb.set("text", "x")

    async def scenario() -> None:
        pool = pool_for(server.port)
        try:
            waits = _waits(rdb)
            calls = [asyncio.ensure_future(pool.replicated(("INCR", "n"), 30)) for _ in range(20)]
            wrong = asyncio.ensure_future(pool.replicated(("INCR", "text"), 30))
            await asyncio.sleep(0)  # every call has joined the group, which is not sent yet
            calls[5].cancel()
            done = await asyncio.gather(*calls, wrong, return_exceptions=True)
            assert isinstance(done[5], asyncio.CancelledError)
            replies = [cast(tuple[Any, Any, Address], d) for i, d in enumerate(done[:20]) if i != 5]
            assert [r[0] for r in replies] == [n for n in range(1, 21) if n != 6]
            assert {(r[1], r[2]) for r in replies} == {(0, ("127.0.0.1", server.port))}
            reply, acked, _ = cast(tuple[Any, Any, Address], done[20])
            assert isinstance(reply, ResponseError) and acked == 0
            assert _waits(rdb) - waits == 1
        finally:
            await pool.disconnect()

    run(scenario)
