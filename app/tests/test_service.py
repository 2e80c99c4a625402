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
    assert rdb.hlen("todos:ids") == 0
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
    assert rdb.hlen("todos:ids") == 2


TEXTOS = ["uno", 'comillas " y \\ barra', "ñandú €", "emoji 😀", "ctl \x00\x1f\x7f",
          "tab\tnl\n", "x" * 500]


def test_create_parts_are_what_json_dumps_gives() -> None:
    """The fast-built strings of TodoService.create: the bytes json.dumps made before."""
    import hashlib
    import re
    import uuid
    from datetime import UTC, datetime
    from json.encoder import encode_basestring_ascii as _json_ascii

    from todo_api import service

    for texto in TEXTOS:
        payload = TodoIn(texto=texto)
        assert service.texto_fingerprint(payload.texto) == hashlib.sha256(
            json.dumps(payload.model_dump(), sort_keys=True).encode()
        ).hexdigest()
        body = json.dumps(
            {"id": "ab" * 16, "texto": payload.texto, "completada": False,
             "createdAt": "2026-12-02T21:30:00.123Z", "instance": "1"}, separators=(",", ":"))
        fp = service.texto_fingerprint(payload.texto)
        assert json.loads(body)["texto"] == payload.texto
        record = json.dumps({"state": "done", "fp": fp, "status": 201, "body": body})
        assert record == (
            f'{{"state": "done", "fp": "{fp}", "status": 201, '
            f'"body": {_json_ascii(body)}}}'
        )
    for _ in range(2000):
        tid = service.new_id()
        u = uuid.UUID(hex=tid)
        assert (u.version, u.variant, u.hex) == (4, uuid.RFC_4122, tid)
    before = datetime.now(UTC)
    now = service._now()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now)
    fmt = "%Y-%m-%dT%H:%M:%S.%f"
    parsed = datetime.strptime(now[:-1], fmt).replace(tzinfo=UTC)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed <= after


async def test_service_bodies_match_json_dumps(make_client: Callable[..., Any]) -> None:
    _, rt = await make_client()
    svc = TodoService(rt)
    for i, texto in enumerate(TEXTOS):
        for key in (None, f"k{i}"):
            r = await svc.create(TodoIn(texto=texto), key)
            todo = json.loads(bytes(r.body))
            assert bytes(r.body) == json.dumps(todo, separators=(",", ":")).encode()
            assert list(todo) == ["id", "texto", "completada", "createdAt", "instance"]
            assert (todo["texto"], todo["instance"]) == (TodoIn(texto=texto).texto,
                                                         rt.settings.instance)


def test_json_bytes_is_the_response_it_replaces() -> None:
    from starlette.responses import Response

    from todo_api.service import JsonBytes

    for body, status, headers in [
        (b'{"a":1}', 201, None),
        (b"[]", 200, {"X-Total-Count": "0"}),
        (b"[1]", 200, {"X-Total-Count": "7", "Link": '</api/todos?cursor=3>; rel="next"'}),
        (b'{"b":2}', 201, {"Idempotent-Replayed": "true"}),
        (b"", 200, None),
    ]:
        want = Response(body, status_code=status, media_type="application/json", headers=headers)
        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        got = JsonBytes(body, status, raw or None)
        assert (got.status_code, got.body, got.raw_headers, got.media_type, got.background) == (
            want.status_code, want.body, want.raw_headers, want.media_type, want.background
        )
