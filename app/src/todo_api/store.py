"""Redis storage: todos, ids and idempotency records, every multi-key change atomic (Lua)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

DATA = "todos:data"  # hash: id -> todo JSON
ORDER = "todos:order"  # sorted set: id scored by creation sequence
SEQ = "todos:seq"  # INCR counter (creation order across instances)
IDEM_PREFIX = "todos:idem:"  # string: idempotency record JSON (pending or done)

_LIST = """
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local out = {}
for i = 1, #ids, 500 do
  local batch = {}
  for j = i, math.min(i + 499, #ids) do batch[#batch + 1] = ids[j] end
  local vals = redis.call('HMGET', KEYS[1], unpack(batch))
  for _, v in ipairs(vals) do if v then out[#out + 1] = v end end
end
return '[' .. table.concat(out, ',') .. ']'
"""

# KEYS: data, order, seq, idem key ('' when none)
# ARGV: id, todo json, has idem ('1'/'0'), token, done record json, ttl
# The todo and its stored response are written together, or not at all.
_CREATE = """
if ARGV[3] == '1' then
  local cur = redis.call('GET', KEYS[4])
  if cur then
    local rec = cjson.decode(cur)
    if rec['token'] ~= ARGV[4] then return 0 end
  end
end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
if ARGV[3] == '1' then
  redis.call('SET', KEYS[4], ARGV[5], 'EX', tonumber(ARGV[6]))
end
return 1
"""

# KEYS: idem key; ARGV: fingerprint, token, pending ttl
_IDEM_BEGIN = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1],
    cjson.encode({state='pending', fp=ARGV[1], token=ARGV[2]}), 'EX', tonumber(ARGV[3]))
  return {'new', ''}
end
local rec = cjson.decode(cur)
if rec['fp'] ~= ARGV[1] then return {'mismatch', ''} end
if rec['state'] == 'pending' then return {'pending', ''} end
return {'done', cur}
"""

# KEYS: idem key; ARGV: token. Drop our own pending marker (after a failure).
_IDEM_ABORT = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local rec = cjson.decode(cur)
if rec['state'] == 'pending' and rec['token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
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
class IdemBegin:
    outcome: Literal["new", "mismatch", "pending", "done"]
    status: int = 0
    body: str = ""


class TodoStore:
    def __init__(self, url: str, password: str | None = None, timeout: float = 1.0) -> None:
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # one immediate reconnect (a stale pooled connection after a Redis restart),
            # no backoff and no retry on timeouts: requests never hang on a dead Redis
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "retry_on_timeout": False,
            "max_connections": 64,
        }
        if password:
            kwargs["password"] = password
        self.redis: Redis = Redis.from_url(url, **kwargs)
        self._list = self.redis.register_script(_LIST)
        self._create = self.redis.register_script(_CREATE)
        self._begin = self.redis.register_script(_IDEM_BEGIN)
        self._abort = self.redis.register_script(_IDEM_ABORT)
        self._patch = self.redis.register_script(_PATCH)
        self._delete = self.redis.register_script(_DELETE)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def list_json(self) -> bytes:
        """The whole list as one JSON array, built inside Redis (one bulk reply to parse)."""
        raw = await self._list(keys=[DATA, ORDER])
        return raw if isinstance(raw, bytes) else str(raw).encode()

    async def get(self, todo_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(DATA, todo_id)
        return None if raw is None else dict(json.loads(raw))

    async def create(
        self,
        todo: dict[str, Any],
        idem_key: str | None = None,
        token: str = "",
        record: str = "",
        ttl: int = 0,
        todo_json: str | None = None,
    ) -> bool:
        """Store ``todo`` (and the idempotency record). False if the key belongs to another.
        ``todo_json``: the caller's compact JSON of ``todo`` when it already has it."""
        ok = await self._create(
            keys=[DATA, ORDER, SEQ, IDEM_PREFIX + idem_key if idem_key else IDEM_PREFIX],
            args=[
                todo["id"],
                todo_json if todo_json is not None else json.dumps(todo, separators=(",", ":")),
                "1" if idem_key else "0",
                token,
                record,
                ttl,
            ],
        )
        return bool(ok)

    async def idem_begin(self, key: str, fingerprint: str, token: str, ttl: int) -> IdemBegin:
        outcome_b, raw = await self._begin(keys=[IDEM_PREFIX + key], args=[fingerprint, token, ttl])
        outcome = outcome_b.decode() if isinstance(outcome_b, bytes) else str(outcome_b)
        if outcome == "done":
            rec = json.loads(raw)
            return IdemBegin("done", int(rec["status"]), str(rec["body"]))
        if outcome not in ("new", "mismatch", "pending"):
            raise RuntimeError(f"unexpected idempotency outcome {outcome!r}")
        return IdemBegin(outcome)  # type: ignore[arg-type]

    async def idem_abort(self, key: str, token: str) -> None:
        await self._abort(keys=[IDEM_PREFIX + key], args=[token])

    async def patch(self, todo_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        raw = await self._patch(keys=[DATA], args=[todo_id, json.dumps(fields)])
        return None if raw is None else dict(json.loads(raw))

    async def delete(self, todo_id: str) -> bool:
        return bool(await self._delete(keys=[DATA, ORDER], args=[todo_id]))
