"""Every todo operation goes through TodoService: the routes and the fast path only parse."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from todo_api.models import TodoIn, TodoPatch
from todo_api.service import TodoService

JSON = {"Content-Type": "application/json"}


async def test_service_patch_and_delete(
    make_client: Callable[..., Any], rdb: redis.Redis
) -> None:
    _, rt = await make_client()
    svc = TodoService(rt)
    created = json.loads(bytes((await svc.create(TodoIn(texto="uno"), None)).body))
    tid = created["id"]

    r = await svc.patch(tid, TodoPatch(completada=True))
    assert r.status_code == 200
    assert json.loads(bytes(r.body)) == {**created, "completada": True}
    r = await svc.patch(tid, TodoPatch(texto="dos"))
    assert json.loads(bytes(r.body)) == {**created, "completada": True, "texto": "dos"}
    r = await svc.patch("nope", TodoPatch(completada=False))
    assert r.status_code == 404
    assert json.loads(bytes(r.body)) == {"error": "todo not found", "detail": {"id": "nope"}}

    r = await svc.delete(tid)
    assert (r.status_code, r.body) == (204, b"")
    assert rdb.hlen("todos:data") == 0
    r = await svc.delete(tid)
    assert r.status_code == 404
    assert json.loads(bytes(r.body)) == {"error": "todo not found", "detail": {"id": tid}}


async def test_every_route_calls_the_service(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, rdb: redis.Redis
) -> None:
    calls: list[str] = []
    for name in ("list", "get", "create", "patch", "delete"):
        original = getattr(TodoService, name)

        def spy(self: TodoService, *a: Any, _o: Any = original, _n: str = name) -> Any:
            calls.append(_n)
            return _o(self, *a)

        monkeypatch.setattr(TodoService, name, spy)
    c, _ = await make_client()
    t = (await c.post("/api/todos", json={"texto": "x"})).json()  # fast path
    # FastAPI's route (charset parameter: the fast path hands it over)
    await c.post("/api/todos", content=b'{"texto": "y"}',
                 headers={"Content-Type": "application/json; charset=utf-8"})
    await c.post("/api/todos", json={"texto": "z"}, headers={"Idempotency-Key": "k"})
    await c.get("/api/todos")  # fast path
    await c.get("/api/todos?limit=5&limit=6")  # FastAPI's route (a repeated parameter)
    await c.get(f"/api/todos/{t['id']}")
    assert (await c.patch(f"/api/todos/{t['id']}", json={"completada": True})).status_code == 200
    assert (await c.patch("/api/todos/nope", json={"completada": True})).status_code == 404
    assert (await c.delete(f"/api/todos/{t['id']}")).status_code == 204
    assert (await c.delete(f"/api/todos/{t['id']}")).status_code == 404
    assert calls == [
        "create", "create", "create", "list", "list", "get", "patch", "patch", "delete", "delete"
    ]
    assert rdb.hlen("todos:data") == 2
