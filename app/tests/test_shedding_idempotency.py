from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import write_v2_tree
from todo_api.cgroup import MB


async def test_shedding_writes_nothing(
    make_client: Callable[..., Any], tmp_path: Path, rdb: redis.Redis
) -> None:
    root = tmp_path / "cg"
    proc = write_v2_tree(root, current=100 * MB, limit=512 * MB)
    c, rt = await make_client(cgroup_root=str(root), proc_self_cgroup=str(proc))
    assert (await c.post("/api/todos", json={"texto": "antes"})).status_code == 201
    keys_before = rdb.dbsize()
    hlen_before = rdb.hlen("todos:ids")

    (root / "system.slice/x/memory.current").write_text(f"{480 * MB}\n")
    rt.monitor.invalidate()
    r = await c.post("/api/todos", json={"texto": "shed"}, headers={"Idempotency-Key": "k-shed"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "5" and r.headers["x-instance"] == "1"
    assert r.json()["error"] == "instance overloaded"
    assert rdb.dbsize() == keys_before and rdb.hlen("todos:ids") == hlen_before
    assert rdb.get("todos:idem:k-shed") is None
    for method, path in (("GET", "/api/todos"), ("DELETE", "/api/todos/x"), ("GET", "/docs")):
        assert (await c.request(method, path)).status_code == 429
    h = await c.get("/api/health")
    assert h.status_code == 503 and h.json()["status"] == "UNHEALTHY"
    assert (await c.get("/livez")).status_code == 200
    assert "todo_api_shed_requests_total 4.0" in (await c.get("/metrics")).text

    (root / "system.slice/x/memory.current").write_text(f"{100 * MB}\n")
    rt.monitor.invalidate()
    assert (await c.get("/api/todos")).status_code == 200
    assert (await c.get("/api/health")).status_code == 200


async def test_idempotent_replay(client: httpx.AsyncClient, rdb: redis.Redis) -> None:
    h = {"Idempotency-Key": "5b0d7a52-1"}
    r1 = await client.post("/api/todos", json={"texto": "una vez"}, headers=h)
    r2 = await client.post("/api/todos", json={"texto": "una vez"}, headers=h)
    assert r1.status_code == r2.status_code == 201
    assert r1.content == r2.content
    assert "idempotent-replayed" not in r1.headers
    assert r2.headers["idempotent-replayed"] == "true"
    assert rdb.hlen("todos:ids") == 1
    assert 0 < rdb.ttl("todos:idem:5b0d7a52-1") <= 86400
    assert "todo_api_idempotent_replays_total 1.0" in (await client.get("/metrics")).text
    # no header: not idempotent
    await client.post("/api/todos", json={"texto": "una vez"})
    await client.post("/api/todos", json={"texto": "una vez"})
    assert rdb.hlen("todos:ids") == 3


async def test_idempotency_mismatch_and_validation(
    client: httpx.AsyncClient, rdb: redis.Redis
) -> None:
    h = {"Idempotency-Key": "k1"}
    assert (await client.post("/api/todos", json={"texto": "a"}, headers=h)).status_code == 201
    r = await client.post("/api/todos", json={"texto": "b"}, headers=h)
    assert r.status_code == 422 and "different body" in r.json()["error"]
    bad = await client.post("/api/todos", json={"texto": ""}, headers={"Idempotency-Key": "k2"})
    assert bad.status_code == 422
    assert rdb.exists("todos:idem:k2") == 0  # failed validation stores nothing
    ok = await client.post("/api/todos", json={"texto": "ahora"}, headers={"Idempotency-Key": "k2"})
    assert ok.status_code == 201
    assert rdb.hlen("todos:ids") == 2


async def test_concurrent_same_key_creates_one(
    client: httpx.AsyncClient, rdb: redis.Redis
) -> None:
    h = {"Idempotency-Key": "burst"}
    rs = await asyncio.gather(
        *[client.post("/api/todos", json={"texto": "carrera"}, headers=h) for _ in range(20)]
    )
    # no in-flight state, no 409: one creates, every other one replays it
    assert {r.status_code for r in rs} == {201}
    assert rdb.hlen("todos:ids") == 1
    assert len({r.content for r in rs}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in rs) == 19


async def test_concurrent_patch_no_lost_update(
    client: httpx.AsyncClient, rdb: redis.Redis
) -> None:
    t = (await client.post("/api/todos", json={"texto": "base"})).json()
    await asyncio.gather(
        client.patch(f"/api/todos/{t['id']}", json={"completada": True}),
        client.patch(f"/api/todos/{t['id']}", json={"texto": "nuevo"}),
    )
    final = (await client.get(f"/api/todos/{t['id']}")).json()
    assert final["completada"] is True and final["texto"] == "nuevo"
