from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import RedisServer


async def test_redis_down_then_back(
    make_client: Callable[..., Any], own_redis: RedisServer
) -> None:
    c, rt = await make_client(redis_url=own_redis.url)
    t = await c.post("/api/todos", json={"texto": "antes"})
    assert t.status_code == 201
    own_redis.stop()

    for method, path, kw in (
        ("GET", "/api/todos", {}),
        ("POST", "/api/todos", {"json": {"texto": "caido"}}),
        ("POST", "/api/todos", {"json": {"texto": "caido"}, "headers": {"Idempotency-Key": "z"}}),
        ("PATCH", f"/api/todos/{t.json()['id']}", {"json": {"completada": True}}),
        ("DELETE", f"/api/todos/{t.json()['id']}", {}),
    ):
        r = await c.request(method, path, **kw)
        assert r.status_code == 503, (method, path, r.text)
        # no exception text: it would name Redis' address (and script SHAs)
        assert r.json() == {"error": "storage unavailable", "detail": None}
        assert str(own_redis.port) not in r.text and "127.0.0.1" not in r.text
        assert r.headers["retry-after"]
    # not the instance's sickness: still ready (200), DEGRADED, still counted healthy
    h = await c.get("/api/health")
    assert h.status_code == 200, h.text
    assert h.json()["status"] == "DEGRADED"
    assert h.json()["redis"] == "down" and h.json()["reasons"] == ["redis unreachable"]
    assert "todo_api_healthy 1.0" in (await c.get("/metrics")).text
    assert "todo_api_redis_errors_total" in (await c.get("/metrics")).text

    own_redis.start()  # same port, empty data set (no persistence): the app reconnects itself
    r = await c.post("/api/todos", json={"texto": "despues"})
    assert r.status_code == 201, r.text
    assert [x["texto"] for x in (await c.get("/api/todos")).json()] == ["despues"]
    rt.health.mark_redis_down()
    rt.health._redis_at = 0.0  # expire the cached ping
    h = await c.get("/api/health")
    assert (h.status_code, h.json()["status"], h.json()["redis"]) == (200, "OK", "ok")
