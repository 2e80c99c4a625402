"""Redis storage: todos, ids and idempotency records, every multi-key change atomic (Lua).

The primary is either TODO_API_REDIS_URL or whichever node the Sentinels name (then a request
keeps looking for it through a failover, and every write waits for a replica's
acknowledgment: app README, "The durability promise")."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import wire
from .config import Settings
from .wire import Address, NotPrimaryError

T = TypeVar("T")

IDS = "todos:ids"  # hash: id -> creation sequence
LIST = "todos:list"  # sorted set: the todos themselves, scored by creation sequence
SEQ = "todos:seq"  # INCR counter (creation order across instances)
IDEM_PREFIX = "todos:idem:"  # string: idempotency record JSON {state, fp, status, body}
# The earlier layout (hash id -> JSON, sorted set of ids): moved into this one on start.
LEGACY_DATA = "todos:data"
LEGACY_ORDER = "todos:order"
# A member of LIST: the creation sequence in 16 hex digits, then the todo's JSON. The scripts
# say SEQ_DIGITS too (_Script puts this value in).
SEQ_DIGITS = 16

# A page is one ZRANGE of LIST (at most limit+1 members: the extra one says whether another
# page exists) and a ZCARD, pipelined, no script: O(log N + limit) whatever the number stored.
# The cursor is the page's last creation sequence (a page starts strictly after it, so a walk
# sees every todo once while others are added), read from the member itself: no score to
# format (WITHSCORES cost Redis ~15 us a page of 100), and nothing to keep atomic with another
# read, so no MULTI (which Redis refuses when full: reads must go on). The todos are the
# members so that a page is a range, not a join: the earlier layout (ids in the sorted set,
# JSON in a hash) joined in a script, and Redis' Lua hashes every byte of every string that
# enters it (redis 7f88923b4, in Debian 12's 7.0.15): that script cost Redis 48-62 us a page
# of 100, a ZRANGE and a ZCARD in MULTI 17 (a loopback client, one at a time).

# KEYS: ids, list; ARGV: id
_GET = """
local seq = redis.call('HGET', KEYS[1], ARGV[1])
if not seq then return false end
local member = redis.call('ZRANGE', KEYS[2], seq, seq, 'BYSCORE')[1]
if not member then return false end
return string.sub(member, SEQ_DIGITS + 1)
"""

# KEYS: ids, list, seq, idempotency record (IDEM_PREFIX alone when there is no key)
# ARGV: id, todo json, fingerprint ('' = no key), record json, record ttl
# Begin and create in one script: a record for the key means the POST was done (replay, or
# 422 for another body); otherwise the todo AND its record are written together. There is no
# in-flight state, so nothing can be left behind by an instance that dies mid-request: its
# retry either finds the record (replay) or finds none (the original wrote nothing) and creates.
# A 'pending' record is the previous version's lease: taken over (that version's final write
# checks its token, so the old owner then writes nothing).
_CREATE = """
if ARGV[3] ~= '' then
  local cur = redis.call('GET', KEYS[4])
  if cur then
    local rec = cjson.decode(cur)
    if rec['state'] ~= 'pending' then
      if rec['fp'] ~= ARGV[3] then return {'mismatch', ''} end
      return {'replay', cur}
    end
  end
end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], seq)
redis.call('ZADD', KEYS[2], seq, string.format('%0' .. SEQ_DIGITS .. 'x', seq) .. ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[4], ARGV[4], 'EX', tonumber(ARGV[5]))
end
return {'created', ''}
"""

# KEYS: ids, list; ARGV: id, fields json. Merge without a read-modify-write race.
_PATCH = """
local seq = redis.call('HGET', KEYS[1], ARGV[1])
if not seq then return false end
local cur = redis.call('ZRANGE', KEYS[2], seq, seq, 'BYSCORE')[1]
if not cur then return false end
local todo = cjson.decode(string.sub(cur, SEQ_DIGITS + 1))
for k, v in pairs(cjson.decode(ARGV[2])) do todo[k] = v end
local out = cjson.encode(todo)
local member = string.sub(cur, 1, SEQ_DIGITS) .. out
if member ~= cur then
  redis.call('ZREM', KEYS[2], cur)
  redis.call('ZADD', KEYS[2], seq, member)
end
return out
"""

# KEYS: ids, list; ARGV: id
_DELETE = """
local seq = redis.call('HGET', KEYS[1], ARGV[1])
if not seq then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], seq, seq)
return redis.call('HDEL', KEYS[1], ARGV[1])
"""

# KEYS: legacy data, legacy order, ids, list; ARGV: how many todos at most.
# Moves the oldest todos of the earlier layout into this one, each todo in one script so
# that it is always in exactly one layout; an id already here (HSETNX) is not moved twice.
# Returns {moved, left}. A todo stored in the hash without its id in the sorted set was never
# listed before either: it stays there.
_MIGRATE = """
local rows = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local moved = 0
for i = 1, #rows, 2 do
  local id, seq = rows[i], rows[i + 1]
  local todo = redis.call('HGET', KEYS[1], id)
  if todo and redis.call('HSETNX', KEYS[3], id, seq) == 1 then
    local member = string.format('%0' .. SEQ_DIGITS .. 'x', tonumber(seq)) .. todo
    redis.call('ZADD', KEYS[4], seq, member)
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[1], id)
end
return {moved, redis.call('ZCARD', KEYS[2])}
"""
MIGRATE_BATCH = 500  # todos a script call: a few milliseconds of Redis each


@dataclass(frozen=True)
class Page:
    body: bytes  # JSON array of the page's todos
    next_cursor: str | None  # None on the last page
    total: int  # todos stored


@dataclass(frozen=True)
class Created:
    outcome: Literal["created", "replay", "mismatch"]
    status: int = 201
    body: str = ""  # replay: the stored response body


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Pause between two tries of a request while the primary is being replaced.
FAILOVER_PAUSE_S = 0.2
# Longest wait for a replica's acknowledgment when health counts the replicas.
HEALTH_WAIT_MS = 100
# A write's wait for a replica when the latest one saw none, or the primary changed since
# (TodoStore._write). Redis times a WAIT out when its event loop next wakes: at once under
# load, within 100 ms (hz 10) when idle.
REPLICA_GONE_WAIT_MS = 20
# Longest wait for one Sentinel's answer.
SENTINEL_TIMEOUT_S = 0.25
# How much longer than the others a Sentinel that left its latest question unanswered is
# waited for (NewestEpochSentinel.views). Back on the network, one answers in milliseconds.
SILENT_GRACE_S = 0.02
# What a failover looks like from here: the old primary refuses, times out, or (demoted)
# answers READONLY or MASTERDOWN, which wire.Connection turns into a NotPrimaryError.
_PRIMARY_GONE = (RedisConnectionError, RedisTimeoutError)
# Pipelined connections for reads; connections (at most) that writes and their WAIT go round.
READ_CONNECTIONS = 4
WRITE_CONNECTIONS = 64


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source.replace("SEQ_DIGITS", str(SEQ_DIGITS))
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


class NewestEpochSentinel(Sentinel):
    """Asks every Sentinel at once and trusts the answer with the newest configuration epoch.

    redis-py's Sentinel takes the first Sentinel that answers: one cut off with the old
    primary keeps naming it (it never saw the failover), and a client that reaches both
    would write to a node that is about to be demoted (and lose those writes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        # indexes of the Sentinels whose latest question went unanswered
        self.silent: set[int] = set()
        # questions to those still out after views() returned (each ends by its own timeout)
        self._late: set[asyncio.Task[dict[str, Any] | None]] = set()

    async def views(self, service_name: str) -> list[dict[str, Any]]:
        """What each Sentinel that answers says of the primary (SENTINEL MASTERS)."""

        async def ask(i: int, sentinel: Redis) -> dict[str, Any] | None:
            try:
                answer = await asyncio.wait_for(sentinel.sentinel_masters(), SENTINEL_TIMEOUT_S)
            except Exception:  # any failure at all is a Sentinel that did not answer
                self.silent.add(i)
                # and its next question starts on new sockets: in the lab a pooled socket to
                # a Sentinel turned up with its transport closed, and uvloop raised
                # RuntimeError (not a ConnectionError) on each write to it: 500s.
                with contextlib.suppress(Exception):
                    await sentinel.connection_pool.disconnect()
                return None
            self.silent.discard(i)
            masters = cast(dict[str, dict[str, Any]], answer)
            return masters.get(service_name)

        # Every Sentinel, not the first majority: only the leader of a failover under way
        # flags it (failover_in_progress) until the others hear of the new primary. A dead
        # Sentinel costs SENTINEL_TIMEOUT_S, not a request's whole timeout; and once it has
        # left a question unanswered (its node gone: every question to it waits that long for
        # nothing), only SILENT_GRACE_S more than the others, while someone else answers.
        # While a data node is gone its Sentinel goes with it, and every write (its replica
        # gone too) asks here: 0.25 s each, when the others answer in a millisecond.
        questions = {i: asyncio.ensure_future(ask(i, s)) for i, s in enumerate(self.sentinels)}
        silent = {i for i in questions if i in self.silent}
        heard = [q for i, q in questions.items() if i not in silent]
        if heard:
            await asyncio.gather(*heard)
            late = [q for i, q in questions.items() if i in silent]
            if late:
                _, pending = await asyncio.wait(late, timeout=SILENT_GRACE_S)
                for q in pending:  # its answer, if any, marks it heard again
                    self._late.add(q)
                    q.add_done_callback(self._late.discard)
        else:
            await asyncio.gather(*questions.values())
        return [v for q in questions.values() if q.done() and (v := q.result())]

    async def aclose(self) -> None:
        for q in list(self._late):
            q.cancel()
        await asyncio.gather(*self._late, return_exceptions=True)
        await super().aclose()

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        views = await self.views(service_name)
        valid = [v for v in views if self.check_master_state(v, service_name)]
        if not valid:
            raise MasterNotFoundError(f"no Sentinel names a primary for {service_name!r}")
        newest = max(valid, key=_epoch)
        return str(newest["ip"]), int(newest["port"])

    async def settled_on(self, service_name: str, address: tuple[str, int] | None) -> bool:
        """True if the Sentinels' newest view names `address` as the primary, and none of
        them sees it down or a failover under way."""
        views = await self.views(service_name)
        if not views or address is None:
            return False
        newest = max(views, key=_epoch)
        if (str(newest["ip"]), int(newest["port"])) != address:
            return False
        unsettled = {"s_down", "o_down", "failover_in_progress"}
        return not any(unsettled & set(str(v.get("flags", "")).split(",")) for v in views)


def _epoch(view: dict[str, Any]) -> int:
    return int(view.get("config-epoch", 0))


class TodoStore:
    """The todo operations on Redis, each one round trip on wire.Pool's pipelined connections
    (a write: EVALSHA, and WAIT with the other writes of its loop iteration). redis-py only
    asks the Sentinels."""

    def __init__(self, settings: Settings) -> None:
        timeout = settings.redis_timeout_ms / 1000
        self.replica_wait_ms = settings.redis_replica_wait_ms
        self.failover_wait = settings.redis_failover_wait_ms / 1000
        # replicas that acknowledged the latest write or check; None: not waiting for any
        self.replicas: int | None = None
        # pool.changes when the latest write's WAIT saw a replica (None: it saw none)
        self.replicated_at: int | None = None
        self.unreplicated_writes = 0
        self.failover_retries = 0
        url = parse_url(settings.redis_url)
        if "path" in url:
            raise ValueError("TODO_API_REDIS_URL: a unix socket is not supported (redis://)")
        username = settings.redis_username or url.get("username")
        password = settings.redis_password or url.get("password")
        connect_timeout = (settings.redis_connect_timeout_ms or settings.redis_timeout_ms) / 1000
        self.sentinel: NewestEpochSentinel | None = None
        self.service_name = settings.redis_sentinel_master
        locate: Callable[[], Awaitable[Address]]
        if settings.redis_sentinels:
            sentinel_kwargs: dict[str, Any] = {
                # a Sentinel answers in a millisecond; a dead one must not hold a request long
                "socket_timeout": min(timeout, SENTINEL_TIMEOUT_S),
                "socket_connect_timeout": min(timeout, SENTINEL_TIMEOUT_S),
                # no retry of its own (redis-py's default tries a dead Sentinel 4 times, with
                # backoff: over a second for every question to the Sentinels)
                "retry": Retry(NoBackoff(), 0),
                "username": settings.redis_sentinel_username,
                "password": settings.redis_sentinel_password,
            }
            self.sentinel = NewestEpochSentinel(
                settings.redis_sentinels, sentinel_kwargs=sentinel_kwargs
            )
            locate = self._primary_address
        else:
            fixed = (str(url.get("host", "127.0.0.1")), int(url.get("port", 6379)))

            async def locate() -> Address:
                return fixed

        # Reads pipeline on a few connections. Writes that wait for a replica commit as a
        # group: those of one loop iteration on one connection, with one WAIT after them
        # (wire.Pool.replicated). That WAIT holds its connection until a replica acknowledges
        # (with no replica, for replica_wait_ms), so the next group goes round up to 64, as
        # many as the blocking pool of 64 this replaced (its default "Too many connections"
        # had turned 100 concurrent requests into 503s). Writes that
        # wait for no replica block nothing: they pipeline like reads, and the requests of one
        # loop iteration share a write to Redis (one connection each was 64 system calls).
        self.pool = wire.Pool(
            locate,
            timeout=timeout,
            connect_timeout=connect_timeout,
            username=username,
            password=password,
            db=int(url.get("db", 0)),
            # a node that answers READONLY or MASTERDOWN (demoted, or still syncing) is
            # left: the next command asks the Sentinels again
            leave_replicas=self.sentinel is not None,
            readers=READ_CONNECTIONS,
            writers=WRITE_CONNECTIONS if self.replica_wait_ms else READ_CONNECTIONS,
        )
        self._get = _Script(_GET)
        self._create = _Script(_CREATE)
        self._patch = _Script(_PATCH)
        self._delete = _Script(_DELETE)
        self._migrate = _Script(_MIGRATE)

    async def _primary_address(self) -> Address:
        """The primary the Sentinels name; if none answers, the one they named last. A
        Sentinel question waits 0.25 s at most, and an instance short of CPU (over its memory
        threshold, starting under load) missed that for every Sentinel at once: each new
        connection then failed (500s) while the primary was fine. Nothing is lost by going
        on: a demoted node refuses writes (READONLY), and a write no replica acknowledged
        still needs the Sentinels' confirmation (_confirm_primary)."""
        assert self.sentinel is not None
        try:
            return await self.sentinel.discover_master(self.service_name)
        except MasterNotFoundError:
            if self.pool.address is None:
                raise
            return self.pool.address

    async def close(self) -> None:
        await self.pool.disconnect()
        if self.sentinel is not None:
            await self.sentinel.aclose()

    async def _call(self, op: Callable[[], Awaitable[T]], *, repeatable: bool = True) -> T:
        """``op()``, tried again while the primary is being replaced (up to failover_wait).
        A node that answered as a replica wrote nothing: that is tried again in any case."""
        deadline = time.monotonic() + self.failover_wait
        while True:
            try:
                return await op()
            except NotPrimaryError:
                if time.monotonic() + FAILOVER_PAUSE_S > deadline:
                    raise
            except _PRIMARY_GONE:
                if not repeatable or time.monotonic() + FAILOVER_PAUSE_S > deadline:
                    raise
            self.failover_retries += 1
            await asyncio.sleep(FAILOVER_PAUSE_S)

    async def _run(
        self, group: str, script: _Script, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        """EVALSHA; after NOSCRIPT (a new or restarted node), SCRIPT LOAD and again."""
        try:
            return await self.pool.call(group, "EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.pool.call(group, "SCRIPT", "LOAD", script.source)
        return await self.pool.call(group, "EVALSHA", script.sha, len(keys), *keys, *args)

    async def _write(self, script: _Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a writing script; with replica_wait_ms, WAIT for a replica in the same round trip."""
        if not self.replica_wait_ms:
            return await self._run("w", script, keys, args)
        # replica_wait_ms only while writes see a replica: once one saw none (the replica
        # gone), or since the primary was lost or moved (the replica of a new or restarted
        # primary is not linked yet), each write would wait that long for nothing before
        # the Sentinels' confirmation. A short WAIT still sees a linked replica (asked, it
        # acknowledges in a millisecond). Health's WAIT does not decide: it counts what
        # acknowledged its connection's latest write, which may predate the replica's loss.
        full = self.replicated_at == self.pool.changes
        wait_ms = self.replica_wait_ms if full else REPLICA_GONE_WAIT_MS
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        for _ in range(2):  # the second time after loading the script (a new primary)
            result, acked, address = await self.pool.replicated(command, wait_ms)
            if not isinstance(result, NoScriptError):
                break
            await self.pool.call("w", "SCRIPT", "LOAD", script.source)
        if isinstance(result, Exception):
            raise result
        if isinstance(acked, ResponseError) and str(acked).startswith("WAIT cannot be used"):
            # a demoted node ran the script without writing (a replay): not the primary
            await self._primary_gone("the node is no longer the primary")
        if isinstance(acked, Exception):
            raise acked
        self.replicas = int(acked)
        self.replicated_at = self.pool.changes if self.replicas else None
        if not self.replicas:
            await self._confirm_primary(address)
            self.unreplicated_writes += 1
        return result

    async def _confirm_primary(self, address: Address) -> None:
        """A write no replica acknowledged stands on the primary alone: acknowledge it only
        if that node (`address`, where it went) stays the primary. In the second between a
        replica's promotion and the old primary's demotion, the old one still takes writes
        (its replica just left it, so WAIT answers 0) and would discard them when demoted:
        such a write is an error, tried again (if safe) on the new primary."""
        if self.sentinel is None:
            return
        if not await self.sentinel.settled_on(self.service_name, address):
            await self._primary_gone(
                "no replica acknowledged the write and the primary it went to is being replaced",
                written=True,
            )

    async def _primary_gone(self, why: str, *, written: bool = False) -> NoReturn:
        """Ask the Sentinels again which node is the primary (the pool then leaves any other),
        and fail this try: the next goes there. After a planned switchover the old primary
        is demoted only ~8 s later (Sentinel's wait); without this the pool kept sending
        writes to it all that time. ``written``: the write may stand on the old node, so
        only a repeatable one is tried again."""
        if self.sentinel is not None:
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                self.pool.moved_to(await self._primary_address())
        raise (RedisConnectionError if written else NotPrimaryError)(why)

    async def ping(self) -> bool:
        """Reachable; with replica_wait_ms, also counts the replicas up to date (WAIT 1)."""
        if not self.replica_wait_ms:
            return bool(await self.pool.call("r", "PING"))
        # WAIT 1: at once if a replica has acknowledged this connection's offset, else after
        # asking it (REPLCONF GETACK), HEALTH_WAIT_MS at most. WAIT 0 0 (never waits) answered
        # 0 now and then under load with the replica linked: health flapped DEGRADED. On a
        # write connection: it may hold it, never a read's.
        wait_ms = min(self.replica_wait_ms, HEALTH_WAIT_MS)
        self.replicas = int(await self.pool.call("w", "WAIT", 1, wait_ms))
        return True

    async def list_page(self, limit: int, cursor: str | None, order: str) -> Page:
        """One page: its todos' stored JSON joined into an array (nothing parsed)."""
        if order == "newest":
            bounds: tuple[str, ...] = ("(" + cursor if cursor else "+inf", "-inf", "BYSCORE", "REV")
        else:
            bounds = ("(" + cursor if cursor else "-inf", "+inf", "BYSCORE")
        commands = [("ZRANGE", LIST, *bounds, "LIMIT", 0, limit + 1), ("ZCARD", LIST)]
        rows, total = await self._call(lambda: self._read(commands))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = str(int(rows[-1][:SEQ_DIGITS], 16))
        body = b"[" + b",".join([row[SEQ_DIGITS:] for row in rows]) + b"]"
        return Page(body, next_cursor, int(total))

    async def _read(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Read commands pipelined in one write: their replies, or the first error."""
        replies, _ = await self.pool.pipeline("r", commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def get_json(self, todo_id: str) -> bytes | None:
        raw = await self._call(lambda: self._run("r", self._get, [IDS, LIST], [todo_id]))
        return None if raw is None else raw if isinstance(raw, bytes) else str(raw).encode()

    async def get(self, todo_id: str) -> dict[str, Any] | None:
        raw = await self.get_json(todo_id)
        return None if raw is None else dict(json.loads(raw))

    async def create(
        self,
        todo: dict[str, Any],
        idem_key: str | None = None,
        fingerprint: str = "",
        record: str = "",
        ttl: int = 0,
        todo_json: str | None = None,
    ) -> Created:
        """Store ``todo``; with ``idem_key``, atomically: replay/mismatch or create + record.
        ``todo_json``: the caller's compact JSON of ``todo`` when it already has it. Only a
        create with a key is tried again through a failover: its record makes that safe."""
        keys = [IDS, LIST, SEQ, IDEM_PREFIX + idem_key if idem_key else IDEM_PREFIX]
        args = [
            todo["id"],
            todo_json if todo_json is not None else json.dumps(todo, separators=(",", ":")),
            fingerprint if idem_key else "",
            record,
            ttl,
        ]
        outcome_b, raw = await self._call(
            lambda: self._write(self._create, keys, args), repeatable=bool(idem_key)
        )
        outcome = _text(outcome_b)
        if outcome == "replay":
            rec = json.loads(raw)
            return Created("replay", int(rec["status"]), str(rec["body"]))
        if outcome == "mismatch":
            return Created("mismatch")
        if outcome != "created":
            raise RuntimeError(f"unexpected create outcome {outcome!r}")
        return Created("created")

    async def patch(self, todo_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        args = [todo_id, json.dumps(fields)]  # a merge: the same result if applied twice
        raw = await self._call(lambda: self._write(self._patch, [IDS, LIST], args))
        return None if raw is None else dict(json.loads(raw))

    async def delete(self, todo_id: str) -> bool:
        """True if the todo is gone. After a failed first try, a second one that finds
        nothing cannot tell "never existed" from "the first try deleted it": True."""
        tries = 0

        async def once() -> bool:
            nonlocal tries
            tries += 1
            return bool(await self._write(self._delete, [IDS, LIST], [todo_id])) or tries > 1

        return await self._call(once)

    async def migrate(self) -> int:
        """Move the todos of the earlier layout into this one (a batch a script, until none
        is left); how many were moved. Run on every start: an instance of the earlier
        version still running during a rolling upgrade keeps writing the earlier layout,
        and the next start moves those too."""
        moved = 0
        while True:
            done, left = await self._run(
                "w", self._migrate, [LEGACY_DATA, LEGACY_ORDER, IDS, LIST], [MIGRATE_BATCH]
            )
            moved += int(done)
            if not int(left):
                return moved
