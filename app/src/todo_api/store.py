"""Redis storage: todos, ids and idempotency records, every multi-key change atomic (Lua)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

DATA = "todos:data"  # hash: id -> todo JSON
ORDER = "todos:order"  # sorted set: id scored by creation sequence
SEQ = "todos:seq"  # INCR counter (creation order across instances)
IDEM_PREFIX = "todos:idem:"  # string: idempotency record JSON {state, fp, status, body}

# KEYS: data, order; ARGV: limit, cursor ('' = first page), 'newest' | 'oldest'.
# Bounded: one ZRANGE of at most limit+1 entries (O(log N + limit)), one HMGET of at most
# limit fields, one ZCARD (O(1)), whatever the number of todos stored. The extra entry says
# whether another page exists; the cursor is the score (creation sequence) of the page's last
# todo, so a page starts strictly after it: a walk sees every todo once while others are added.
_LIST = """
local limit = tonumber(ARGV[1])
local rows
if ARGV[3] == 'newest' then
  local hi = '+inf'
  if ARGV[2] ~= '' then hi = '(' .. ARGV[2] end
  rows = redis.call('ZRANGE', KEYS[2], hi, '-inf', 'BYSCORE', 'REV',
                    'LIMIT', 0, limit + 1, 'WITHSCORES')
else
  local lo = '-inf'
  if ARGV[2] ~= '' then lo = '(' .. ARGV[2] end
  rows = redis.call('ZRANGE', KEYS[2], lo, '+inf', 'BYSCORE',
                    'LIMIT', 0, limit + 1, 'WITHSCORES')
end
local n = #rows / 2
local take = math.min(n, limit)
local out = {}
local nextc = ''
if take > 0 then
  local ids = {}
  for i = 1, take do ids[i] = rows[2 * i - 1] end
  local vals = redis.call('HMGET', KEYS[1], unpack(ids))
  for i = 1, take do if vals[i] then out[#out + 1] = vals[i] end end
  if n > limit then nextc = rows[2 * take] end
end
return {'[' .. table.concat(out, ',') .. ']', nextc, redis.call('ZCARD', KEYS[2])}
"""

# KEYS: data, order, seq, idempotency record (IDEM_PREFIX alone when there is no key)
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
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[4], ARGV[4], 'EX', tonumber(ARGV[5]))
end
return {'created', ''}
"""

# KEYS: data; ARGV: id, fields json. Merge without a read-modify-write race.
_PATCH = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
local todo = cjson.decode(cur)
for k, v in pairs(cjson.decode(ARGV[2])) do todo[k] = v end
local out = cjson.encode(todo)
redis.call('HSET', KEYS[1], ARGV[1], out)
return out
"""

# KEYS: data, order; ARGV: id
_DELETE = """
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
"""


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


class TodoStore:
    def __init__(
        self,
        url: str,
        password: str | None,
        *,
        timeout: float,  # seconds; Settings.redis_timeout_ms is the one default
        username: str | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # one immediate reconnect (a stale pooled connection after a Redis restart),
            # no backoff and no retry on timeouts: requests never hang on a dead Redis
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "retry_on_timeout": False,
        }
        if password:
            kwargs["password"] = password
        if username:  # ACL user (AUTH user pass); without it AUTH pass logs in as `default`
            kwargs["username"] = username
        # A blocking pool: a request waits (up to `timeout`) for one of the 64 connections
        # instead of failing at once. The default pool raised "Too many connections" (a 503
        # "storage unavailable" though Redis was fine) under 100 concurrent requests.
        pool = BlockingConnectionPool.from_url(url, max_connections=64, timeout=timeout, **kwargs)
        self.redis: Redis = Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self._list = self.redis.register_script(_LIST)
        self._create = self.redis.register_script(_CREATE)
        self._patch = self.redis.register_script(_PATCH)
        self._delete = self.redis.register_script(_DELETE)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def list_page(self, limit: int, cursor: str | None, order: str) -> Page:
        """One page, its JSON array built inside Redis (one bulk reply, nothing to parse)."""
        body, nxt, total = await self._list(keys=[DATA, ORDER], args=[limit, cursor or "", order])
        raw = body if isinstance(body, bytes) else str(body).encode()
        next_cursor = _text(nxt) or None
        return Page(raw, next_cursor, int(total))

    async def get_json(self, todo_id: str) -> bytes | None:
        raw = await self.redis.hget(DATA, todo_id)
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
        ``todo_json``: the caller's compact JSON of ``todo`` when it already has it."""
        outcome_b, raw = await self._create(
            keys=[DATA, ORDER, SEQ, IDEM_PREFIX + idem_key if idem_key else IDEM_PREFIX],
            args=[
                todo["id"],
                todo_json if todo_json is not None else json.dumps(todo, separators=(",", ":")),
                fingerprint if idem_key else "",
                record,
                ttl,
            ],
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
        raw = await self._patch(keys=[DATA], args=[todo_id, json.dumps(fields)])
        return None if raw is None else dict(json.loads(raw))

    async def delete(self, todo_id: str) -> bool:
        return bool(await self._delete(keys=[DATA, ORDER], args=[todo_id]))
