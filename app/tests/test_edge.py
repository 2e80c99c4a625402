"""The edge of the app: methods (OPTIONS, HEAD, 405 + Allow), media types (415), a repeated
Idempotency-Key (400), keyless POSTs keyed by X-Request-ID, storage full (507), internal
errors without internals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import RedisServer

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/todos", "GET, HEAD, POST, OPTIONS"),
        ("/api/todos/abc", "GET, HEAD, PATCH, DELETE, OPTIONS"),
        ("/api/health", "GET, HEAD, OPTIONS"),
        ("/docs", "GET, HEAD, OPTIONS"),
    ],
)
async def test_options_and_405_list_every_method(
    client: httpx.AsyncClient, path: str, allow: str
) -> None:
    r = await client.options(path)
    assert (r.status_code, r.headers["allow"], r.content) == (204, allow, b"")
    assert r.headers["x-instance"] == "1"
    r = await client.put(path, json={"texto": "x"})
    assert (r.status_code, r.headers["allow"]) == (405, allow)
    assert r.json() == {"error": "method not allowed", "detail": None}
    assert (await client.options("/nowhere")).status_code == 404


async def test_head_wherever_get_works(client: httpx.AsyncClient, rdb: redis.Redis) -> None:
    t = (await client.post("/api/todos", json={"texto": "h"})).json()
    for path in ("/api/todos", "/api/todos?limit=1&order=oldest", f"/api/todos/{t['id']}",
                 "/api/health", "/livez", "/openapi.json"):
        get = await client.get(path)
        head = await client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-length"] == str(len(get.content)), path
        assert head.headers["content-type"] == get.headers["content-type"]
    assert (await client.head("/api/todos")).headers["x-total-count"] == "1"
    assert (await client.head("/api/todos/nope")).status_code == 404
    assert (await client.head("/api/todos?limit=0")).status_code == 422
    text = (await client.get("/metrics")).text
    assert 'todo_api_requests_total{method="HEAD",route="/api/todos",status="200"}' in text


@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/xml", "json"],
)
async def test_non_json_body_is_415(
    client: httpx.AsyncClient, rdb: redis.Redis, ctype: str
) -> None:
    t = (await client.post("/api/todos", json={"texto": "a"})).json()
    for method, path in (("POST", "/api/todos"), ("PATCH", f"/api/todos/{t['id']}")):
        r = await client.request(method, path, content=b'{"texto": "b"}',
                                 headers={"Content-Type": ctype})
        assert r.status_code == 415, (method, ctype)
        assert r.json() == {"error": "unsupported media type",
                            "detail": {"expected": "application/json"}}
    assert rdb.hlen("todos:ids") == 1


@pytest.mark.parametrize(
    "body",
    [b'\xef\xbb\xbf{"texto": "bom"}', '{"texto": "bom"}'.encode("utf-16")],
    ids=["utf-8 BOM", "utf-16"],
)
async def test_json_the_fast_path_refuses_is_still_fastapis(
    client: httpx.AsyncClient, rdb: redis.Redis, body: bytes
) -> None:
    """The fast path parses with pydantic's JSON parser, which refuses what Python's json
    takes (a BOM, UTF-16): FastAPI answers those as it always did."""
    r = await client.post("/api/todos", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["texto"] == "bom"
    assert rdb.hlen("todos:ids") == 1


@pytest.mark.parametrize(
    "ctype",
    ["application/json", "application/json; charset=utf-8", "Application/JSON",
     "application/merge-patch+json", "application/vnd.todo+json; charset=UTF-8"],
)
async def test_json_media_types_accepted(client: httpx.AsyncClient, ctype: str) -> None:
    r = await client.post("/api/todos", content=b'{"texto": "b"}', headers={"Content-Type": ctype})
    assert r.status_code == 201, r.text
    p = await client.patch(f"/api/todos/{r.json()['id']}", content=b'{"completada": true}',
                           headers={"Content-Type": ctype})
    assert p.status_code == 200 and p.json()["completada"] is True


async def test_patch_null_fields_refused(client: httpx.AsyncClient) -> None:
    t = (await client.post("/api/todos", json={"texto": "a"})).json()
    for body in ({"texto": None}, {"texto": None, "completada": True}, {}, {"otro": 1}):
        r = await client.patch(f"/api/todos/{t['id']}", json=body)
        assert r.status_code == 422, body


@pytest.mark.parametrize("fast", [True, False])
async def test_two_idempotency_keys_are_400(
    client: httpx.AsyncClient, rdb: redis.Redis, fast: bool
) -> None:
    # fast: what the fast path takes (plain application/json); else FastAPI's route
    ctype = "application/json" if fast else "application/json; charset=utf-8"
    headers = [("Content-Type", ctype), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    r = await client.post("/api/todos", content=b'{"texto": "x"}', headers=headers)
    assert r.status_code == 400
    assert r.json() == {"error": "more than one Idempotency-Key header", "detail": None}
    assert rdb.dbsize() == 0


@pytest.mark.parametrize("fast", [True, False])
async def test_keyless_post_keyed_by_request_id(
    client: httpx.AsyncClient, rdb: redis.Redis, fast: bool
) -> None:
    # NGINX's retry of a keyless POST on the other instance carries the same X-Request-ID
    ctype = "application/json" if fast else "application/json; charset=utf-8"
    h = {"Content-Type": ctype, "X-Request-ID": "f00dfeed" * 4}
    r1 = await client.post("/api/todos", content=b'{"texto": "una"}', headers=h)
    r2 = await client.post("/api/todos", content=b'{"texto": "una"}', headers=h)
    assert (r1.status_code, r2.status_code) == (201, 201)
    assert r1.content == r2.content and r2.headers["idempotent-replayed"] == "true"
    assert rdb.hlen("todos:ids") == 1
    assert 0 < rdb.ttl("todos:idem:lb:" + "f00dfeed" * 4) <= 120
    other = await client.post("/api/todos", content=b'{"texto": "otra"}', headers=h)
    assert other.status_code == 422 and other.json()["detail"] is None  # not the client's key
    # the client's own key wins over the request id
    own = {**h, "Idempotency-Key": "mine"}
    r3 = await client.post("/api/todos", content=b'{"texto": "una"}', headers=own)
    assert r3.status_code == 201 and "idempotent-replayed" not in r3.headers
    assert rdb.hlen("todos:ids") == 2 and 86000 < rdb.ttl("todos:idem:mine") <= 86400
    # no key, no request id: a plain create every time (as the seed)
    for _ in range(2):
        plain = {"Content-Type": ctype}
        await client.post("/api/todos", content=b'{"texto": "una"}', headers=plain)
    assert rdb.hlen("todos:ids") == 4


async def test_concurrent_keyless_retries_store_once(
    client: httpx.AsyncClient, rdb: redis.Redis
) -> None:
    h = {"X-Request-ID": "req-1"}
    rs = await asyncio.gather(
        *[client.post("/api/todos", json={"texto": "carrera"}, headers=h) for _ in range(20)]
    )
    assert {r.status_code for r in rs} == {201} and len({r.content for r in rs}) == 1
    assert rdb.hlen("todos:ids") == 1


async def test_storage_full_is_507_and_loses_nothing(
    make_client: Callable[..., Any], own_redis: RedisServer
) -> None:
    c, _ = await make_client(redis_url=own_redis.url)
    t = await c.post("/api/todos", json={"texto": "antes"}, headers={"Idempotency-Key": "k"})
    assert t.status_code == 201
    admin = own_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # everything is over it now
    for kw in ({"json": {"texto": "lleno"}},
               {"json": {"texto": "lleno"}, "headers": {"Idempotency-Key": "k2"}},
               {"json": {"texto": "lleno"}, "headers": {"X-Request-ID": "r"}}):
        r = await c.post("/api/todos", **kw)
        assert r.status_code == 507, r.text
        assert r.json() == {"error": "storage full", "detail": None}
        assert r.headers["retry-after"] == "5"
    # reads still work, acknowledged data is all there, a replay still replays
    lst = await c.get("/api/todos")
    assert lst.status_code == 200 and [x["id"] for x in lst.json()] == [t.json()["id"]]
    again = await c.post("/api/todos", json={"texto": "antes"}, headers={"Idempotency-Key": "k"})
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert (await c.delete(f"/api/todos/{t.json()['id']}")).status_code == 204
    h = await c.get("/api/health")  # Redis answers: not "down"
    assert (h.status_code, h.json()["status"], h.json()["redis"]) == (200, "OK", "ok")
    admin.config_set("maxmemory", "0")
    assert (await c.post("/api/todos", json={"texto": "después"})).status_code == 201
    admin.close()


async def test_script_error_is_500_without_internals(
    make_client: Callable[..., Any], rdb: redis.Redis
) -> None:
    c, _ = await make_client()
    rdb.set("todos:list", "not a sorted set")  # WRONGTYPE: in the page read and the script
    for r in (await c.get("/api/todos"), await c.post("/api/todos", json={"texto": "x"})):
        assert r.status_code == 500
        assert r.json() == {"error": "internal error", "detail": None}
    h = await c.get("/api/health")
    assert h.json()["redis"] == "ok"  # an error reply is not an unreachable Redis
