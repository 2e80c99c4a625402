"""A thin pipelined Redis client for the store's hot path: EVALSHA, WAIT, ZRANGE, PING.

redis-py's asyncio call path was 35-46% of the instance's CPU under load (a pool checkout, a
wait_for per command, a retry wrapper, a Protocol check). Here a command is written to an
asyncio transport (with the others of the same loop iteration, in one write) and a future
resolved, in order, by a hiredis reader: a connection carries many requests at once
(pipelining), one timer per connection bounds them all, and a cancelled caller leaves the
connection usable (its reply is read and dropped).

Errors are redis-py's classes (redis.exceptions), so the app answers them as before: a
reply error is parsed by redis-py's own parser; a connection that fails, closes or answers
nothing within the timeout is closed and every command on it fails with ConnectionError or
TimeoutError. Two groups of connections: reads pipeline on a few; writes, whose WAIT holds
its connection until a replica acknowledges, go round a larger set so that one write's WAIT
does not hold the reads (nor many other writes) queued behind it. Writes that wait for a
replica commit as a group: those of one loop iteration share one connection and one WAIT
(Pool.replicated). What is rare (asking the Sentinels) stays with redis-py
(store.NewestEpochSentinel)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

Address = tuple[str, int]


class NotPrimaryError(RedisConnectionError):
    """The node answered as a replica (READONLY, MASTERDOWN, WAIT refused): nothing was
    written, so the command may be tried again on the primary, whatever it was."""


class _ReplyError(Exception):
    """hiredis' class for a reply error, turned into redis-py's before anyone sees it."""


def _error(raw: _ReplyError) -> RedisError:
    return cast(RedisError, BaseParser.parse_error(str(raw)))  # type: ignore[no-untyped-call]


class Connection(asyncio.Protocol):
    """One socket; replies resolve pending entries in order. An entry: [future, replies
    expected, replies so far (None for one command)], and the loop time it is due by."""

    def __init__(
        self,
        address: Address,
        timeout: float,
        leave_replicas: bool,
        on_lost: Callable[[Address], None] | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.leave_replicas = leave_replicas  # a READONLY / MASTERDOWN answer closes it
        self.on_lost = on_lost  # told when the node stops answering or drops the connection
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader(replyError=_ReplyError)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[asyncio.Future[Any], list[Any], float]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.outbox: list[bytes] = []  # commands sent in this loop iteration, not yet written
        self.alive = False
        self.retiring = False  # closes once its last command is answered

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.alive = True

    def connection_lost(self, exc: Exception | None) -> None:
        dropped = self.alive and not self.retiring  # not closed by us
        self._fail(RedisConnectionError(f"connection to {self.address} lost"))
        if dropped and self.on_lost is not None:
            self.on_lost(self.address)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self.close(RedisConnectionError("unexpected reply"))
                return
            if isinstance(reply, _ReplyError):
                reply = _error(reply)
                if self.leave_replicas and isinstance(reply, ReadOnlyError | MasterDownError):
                    self.close(NotPrimaryError("the node is no longer the primary"))
                    return
            entry = pending[0]
            acc = entry[1]
            acc.append(reply)
            if len(acc) <= acc[0]:  # acc[0]: replies expected (a pipeline's)
                continue
            pending.popleft()
            fut = entry[0]
            if not fut.done():
                fut.set_result(acc)
            if self.retiring and not pending:
                self.close()
                return

    # commands
    def send(self, packed: bytes, replies: int) -> asyncio.Future[list[Any]]:
        """Send already-packed commands; the future's result is [replies, *the replies]."""
        if not self.alive or self.transport is None or self.transport.is_closing():
            self.alive = False
            raise RedisConnectionError(f"connection to {self.address} closed")
        fut: asyncio.Future[list[Any]] = self.loop.create_future()
        deadline = self.loop.time() + self.timeout
        self.pending.append((fut, [replies], deadline))
        self.outbox.append(packed)
        if len(self.outbox) == 1:
            self.loop.call_soon(self._flush)
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._check)
        return fut

    def _flush(self) -> None:
        """Write every command sent since the last flush at once: the requests that ran in
        one loop iteration share one write (one system call; Redis reads them in one go).
        A write each was the instance's largest single cost under load (18 % of its CPU)."""
        data = b"".join(self.outbox)
        self.outbox.clear()
        if self.transport is None or self.transport.is_closing():
            return  # closed meanwhile: close() failed what was pending
        try:
            self.transport.write(data)
        except Exception as exc:  # uvloop raised RuntimeError on a closed transport
            self.close(RedisConnectionError(f"write to {self.address} failed: {exc}"))

    def _check(self) -> None:
        """The oldest command is due: past its deadline, the node is not answering."""
        self.timer = None
        if not self.pending:
            return
        due = self.pending[0][2]
        if due <= self.loop.time():
            self.close(RedisTimeoutError(f"no answer from {self.address} in {self.timeout} s"))
            if self.on_lost is not None:
                self.on_lost(self.address)
        else:
            self.timer = self.loop.call_at(due, self._check)

    def _fail(self, exc: Exception) -> None:
        self.alive = False
        self.outbox.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.pending:
            fut = self.pending.popleft()[0]
            if not fut.done():
                fut.set_exception(exc)

    def retire(self) -> None:
        """Take no more commands; close once those sent are answered (or time out)."""
        self.alive = False
        self.retiring = True
        if not self.pending:
            self.close()

    def close(self, exc: Exception | None = None) -> None:
        self._fail(exc or RedisConnectionError(f"connection to {self.address} closed"))
        if self.transport is not None:
            self.transport.abort()

    @property
    def load(self) -> int:
        return len(self.pending)


def pack(*args: Any) -> bytes:
    return hiredis.pack_command(args)  # type: ignore[no-any-return]


class _GroupCommit:
    """The writes of one loop iteration that wait for a replica (Pool.replicated)."""

    __slots__ = ("commands", "waiters")

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.waiters: list[asyncio.Future[tuple[Any, Any, Address]]] = []

    def fail(self, exc: BaseException) -> None:
        for fut in self.waiters:
            if not fut.done():
                fut.set_exception(exc)


def _result(acc: list[Any]) -> Any:
    reply = acc[1]
    if isinstance(reply, Exception):
        raise reply
    return reply


class Pool:
    """Connections to the node `locate()` names; `readers` pipelined connections for reads,
    up to `writers` for writes (and WAIT). A connection to another node than the one last
    located is dropped when next picked: after a failover no request goes to the old
    primary on an old socket."""

    def __init__(
        self,
        locate: Callable[[], Awaitable[Address]],
        *,
        timeout: float,
        connect_timeout: float,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        leave_replicas: bool = False,
        readers: int = 4,
        writers: int = 32,
    ) -> None:
        self.locate = locate
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.leave_replicas = leave_replicas
        self.address: Address | None = None
        # times the primary was lost or moved (the store waits less for a replica after one)
        self.changes = 0
        setup: list[bytes] = []
        if password:
            setup.append(pack("AUTH", username, password) if username else pack("AUTH", password))
        if db:
            setup.append(pack("SELECT", db))
        self.setup = setup
        self.slots: dict[str, list[Connection | None]] = {
            "r": [None] * readers,
            "w": [None] * writers,
        }
        self.next = {"r": 0, "w": 0}
        self.connecting: dict[tuple[str, int], asyncio.Future[Connection]] = {}
        self.locating: asyncio.Future[Address] | None = None
        # replicated(): this loop iteration's writes, by WAIT timeout; the groups being sent
        self.gathering: dict[int, _GroupCommit] = {}
        self.committing: set[asyncio.Task[None]] = set()

    async def connection(self, group: str) -> Connection:
        slots = self.slots[group]
        i = self.next[group]
        self.next[group] = (i + 1) % len(slots)
        conn = slots[i]
        if conn is not None and conn.alive and conn.address == self.address:
            return conn
        if conn is not None:
            conn.retire()
            slots[i] = None
        key = (group, i)
        opening = self.connecting.get(key)
        if opening is None:
            opening = asyncio.ensure_future(self._open())
            self.connecting[key] = opening

            def done(f: asyncio.Future[Connection]) -> None:
                self.connecting.pop(key, None)
                if not f.cancelled() and f.exception() is None:
                    slots[i] = f.result()

            opening.add_done_callback(done)
        return await asyncio.shield(opening)

    async def located(self) -> Address:
        """The primary's address: one locate() in flight, shared by every connection opening
        meanwhile (after a failover every empty slot opens at once; each asking the Sentinels
        on its own was dozens of questions for one answer)."""
        if self.locating is None:
            locating = asyncio.ensure_future(self.locate())
            self.locating = locating

            def done(f: asyncio.Future[Address]) -> None:
                if self.locating is f:
                    self.locating = None
                if not f.cancelled():
                    f.exception()  # retrieved: the waiters re-raise it

            locating.add_done_callback(done)
        return await asyncio.shield(self.locating)

    async def _open(self) -> Connection:
        address = await self.located()
        if address != self.address:
            self.moved_to(address)
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(address, self.timeout, self.leave_replicas, self.lost),
                    *address,
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to {address}: {exc}") from exc
        if self.setup:
            try:
                replies = await conn.send(b"".join(self.setup), len(self.setup))
                for reply in replies[1:]:
                    if isinstance(reply, Exception):
                        raise reply
            except BaseException:
                conn.close()
                raise
        return conn

    def moved_to(self, address: Address) -> None:
        """The primary is `address` now: connections elsewhere are closed."""
        self.address = address
        self.changes += 1
        for slots in self.slots.values():
            for i, conn in enumerate(slots):
                if conn is not None and conn.address != address:
                    conn.retire()
                    slots[i] = None

    def lost(self, address: Address) -> None:
        """A connection to `address` timed out or was dropped: the node may be gone (a plug
        pulled: no reset, every socket to it silent). Every other connection to it is closed
        too, failing what waits on it now rather than one timeout per connection later, and
        the next command locates the primary anew (the Sentinels may name another by then)."""
        if self.address == address:
            self.address = None
            self.changes += 1
        for slots in self.slots.values():
            for i, conn in enumerate(slots):
                if conn is not None and conn.address == address:
                    slots[i] = None
                    conn.close(RedisConnectionError(f"{address} stopped answering"))

    async def call(self, group: str, *args: Any) -> Any:
        conn = await self.connection(group)
        return _result(await conn.send(pack(*args), 1))

    async def pipeline(
        self, group: str, commands: Sequence[Sequence[Any]]
    ) -> tuple[list[Any], Address]:
        """Commands in one write; their replies (errors as values) and the node they went to."""
        conn = await self.connection(group)
        packed = b"".join(pack(*c) for c in commands)
        acc = await conn.send(packed, len(commands))
        return acc[1:], conn.address

    async def replicated(
        self, command: Sequence[Any], wait_ms: int
    ) -> tuple[Any, Any, Address]:
        """`command` on a write connection, then WAIT 1 `wait_ms`: the command's reply and
        WAIT's (errors as values) and the node they went to. A group commit: the writes of one
        loop iteration go out together on one connection with ONE WAIT after them all (a WAIT
        counts the replicas that have every write its connection sent before it). One WAIT
        per write held a connection each and cost Redis (primary and replica) 52 us a POST."""
        loop = asyncio.get_running_loop()
        group = self.gathering.get(wait_ms)
        if group is None:
            group = self.gathering[wait_ms] = _GroupCommit()
            loop.call_soon(self._commit, wait_ms)
        fut: asyncio.Future[tuple[Any, Any, Address]] = loop.create_future()
        group.commands.append(pack(*command))
        group.waiters.append(fut)
        return await fut

    def _commit(self, wait_ms: int) -> None:
        group = self.gathering.pop(wait_ms)
        task = asyncio.ensure_future(self._send_group(group, wait_ms))
        self.committing.add(task)  # a reference until it is done
        task.add_done_callback(self.committing.discard)

    async def _send_group(self, group: _GroupCommit, wait_ms: int) -> None:
        n = len(group.commands)
        try:
            conn = await self.connection("w")
            acc = await conn.send(b"".join([*group.commands, pack("WAIT", 1, wait_ms)]), n + 1)
        except asyncio.CancelledError:  # disconnect()
            group.fail(RedisConnectionError("the pool was closed"))
            raise
        except Exception as exc:
            group.fail(exc)
            return
        acked = acc[n + 1]
        for reply, fut in zip(acc[1 : n + 1], group.waiters, strict=True):
            if not fut.done():  # a caller cancelled meanwhile: its reply is dropped
                fut.set_result((reply, acked, conn.address))

    async def disconnect(self) -> None:
        for group in self.gathering.values():
            group.fail(RedisConnectionError("the pool was closed"))
        self.gathering.clear()
        for task in list(self.committing):
            task.cancel()
        for slots in self.slots.values():
            for i, conn in enumerate(slots):
                if conn is not None:
                    conn.close()
                    slots[i] = None
        if self.locating is not None:
            self.locating.cancel()
        for opening in list(self.connecting.values()):
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
