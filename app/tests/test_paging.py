"""GET /api/todos pages: limits, order, cursor walk, Link/X-Total-Count; a page read stays
bounded whatever the number of todos (figures printed, no timing asserts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import put_todo
from todo_api.store import IDS, SEQ


async def _create(c: httpx.AsyncClient, n: int, prefix: str = "t") -> list[str]:
    ids = []
    for i in range(n):
        r = await c.post("/api/todos", json={"texto": f"{prefix}{i}"})
        assert r.status_code == 201
        ids.append(r.json()["id"])
    return ids


def _next(r: httpx.Response) -> str | None:
    link: str | None = r.headers.get("link")
    if link is None:
        return None
    assert link.startswith("</api/todos?") and link.endswith('>; rel="next"'), link
    return link[1 : link.index(">")]


async def test_default_page_and_limits(client: httpx.AsyncClient, rdb: redis.Redis) -> None:
    ids = await _create(client, 7)
    r = await client.get("/api/todos")
    assert [t["id"] for t in r.json()] == ids[::-1]  # newest first
    assert r.headers["x-total-count"] == "7" and "link" not in r.headers
    r = await client.get("/api/todos?order=oldest")
    assert [t["id"] for t in r.json()] == ids
    r = await client.get("/api/todos?limit=3")
    assert [t["id"] for t in r.json()] == ids[:-4:-1]
    assert _next(r) == f"/api/todos?limit=3&order=newest&cursor={int(rdb.hget(IDS, ids[4]) or 0)}"
    for q in ("limit=0", "limit=501", "limit=x", "order=random", "cursor=abc", "cursor=-1",
              "cursor=1e3", "cursor=" + "9" * 16):
        bad = await client.get(f"/api/todos?{q}")
        assert bad.status_code == 422, q
        assert bad.json()["error"] == "validation failed"
    assert (await client.get("/api/todos?limit=500")).status_code == 200
    # a cursor past the end: an empty last page
    r = await client.get("/api/todos?cursor=1")
    assert (r.json(), r.headers["x-total-count"], r.headers.get("link")) == ([], "7", None)


async def test_default_limit_is_100(client: httpx.AsyncClient, rdb: redis.Redis) -> None:
    pipe = rdb.pipeline()
    for i in range(1, 131):
        tid = f"id{i:03d}"
        put_todo(pipe, {"id": tid, "texto": "x", "completada": False,
                        "createdAt": "2026-01-01T00:00:00.000Z", "instance": "1"}, i)
    pipe.set(SEQ, 130)
    pipe.execute()
    r = await client.get("/api/todos")
    assert len(r.json()) == 100 and r.json()[0]["id"] == "id130"
    assert _next(r) == "/api/todos?limit=100&order=newest&cursor=31"
    rest = await client.get(_next(r) or "")
    assert [t["id"] for t in rest.json()] == [f"id{i:03d}" for i in range(30, 0, -1)]
    assert "link" not in rest.headers


@pytest.mark.parametrize("order", ["newest", "oldest"])
async def test_cursor_walk_sees_each_todo_once_while_others_are_added(
    client: httpx.AsyncClient, rdb: redis.Redis, order: str
) -> None:
    before = await _create(client, 23, "b")
    deleted = before[5]
    seen: list[str] = []
    added: list[str] = []
    url: str | None = f"/api/todos?limit=4&order={order}"
    pages = 0
    while url is not None:
        r = await client.get(url)
        assert r.status_code == 200
        seen += [t["id"] for t in r.json()]
        added += await _create(client, 2, f"p{pages}-")  # others write during the walk
        if pages == 1:
            assert (await client.delete(f"/api/todos/{deleted}")).status_code == 204
        url = _next(r)
        pages += 1
    assert len(seen) == len(set(seen)), "a todo came twice"
    expected = [x for x in before if x != deleted or x in seen[:8]]
    if order == "newest":
        # the walk goes back in time: every todo stored before it, once; none of the new ones
        assert seen == expected[::-1]
    else:
        # forward in time: every todo, the ones added during the walk too, in creation order
        assert seen == expected + added[: len(seen) - len(expected)]
        assert set(added) <= set(seen) | set(added[-2:])  # the last page's adds come after it
    total = int((await client.get("/api/todos?limit=1")).headers["x-total-count"])
    assert total == len(before) - 1 + len(added)


def _fill(rdb: redis.Redis, n: int) -> None:
    todo = {"texto": "x" * 40, "completada": False, "createdAt": "2026-01-01T00:00:00.000Z",
            "instance": "1"}
    for start in range(0, n, 10_000):
        pipe = rdb.pipeline(transaction=False)
        for i in range(start, min(start + 10_000, n)):
            tid = f"{i:032x}"
            put_todo(pipe, {"id": tid, **todo}, i + 1)
        pipe.execute()
    rdb.set(SEQ, n)


@pytest.mark.parametrize("n", [20_000, 200_000])
async def test_a_page_read_stays_bounded(
    make_client: Callable[..., Any], rdb: redis.Redis, n: int
) -> None:
    _fill(rdb, n)
    c, _ = await make_client()
    rdb.config_set("slowlog-log-slower-than", "0")  # log every command with its duration
    rdb.slowlog_reset()
    started = time.perf_counter()
    r = await c.get("/api/todos?limit=500")
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert r.status_code == 200 and len(r.json()) == 500
    assert r.headers["x-total-count"] == str(n) and _next(r) is not None
    mid = await c.get(f"/api/todos?limit=500&order=oldest&cursor={n // 2}")
    assert [t["id"] for t in mid.json()][:1] == [f"{n // 2:032x}"]
    log = rdb.slowlog_get(128)
    rdb.config_set("slowlog-log-slower-than", "10000")
    ranges = [e for e in log if e["command"].startswith(b"ZRANGE ")]
    assert len(ranges) == 2, log  # two pages
    assert all(int(e["command"].split()[-1]) == 501 for e in ranges), [e["command"] for e in ranges]
    assert not [e for e in log if e["command"].split()[0] in (b"EVALSHA", b"HGETALL", b"SCAN")]
    print(
        f"\n{n} todos: a page of 500 took {ranges[0]['duration']} us in Redis "
        f"(SLOWLOG: its ZRANGE), whole GET {elapsed_ms:.1f} ms in-process"
    )
