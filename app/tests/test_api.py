from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.routing import APIRoute

from tests.conftest import write_v1_tree, write_v2_tree
from todo_api.cgroup import MB
from todo_api.models import HEALTH_PATHS
from todo_api.routes import build_router
from todo_api.service import TodoService

JSON = {"Content-Type": "application/json"}


async def test_health_contract(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["instance"] == "1" and isinstance(body["instance"], str)
    assert body["instance"] + " - " + body["status"] == "1 - OK"  # the seed's jq line
    assert body["memorySource"] == "fallback"
    assert body["redis"] == "ok" and body["thresholdPercent"] == 80
    for k in ("rssMB", "memoryPercent", "limitMB", "usedMB"):
        assert isinstance(body[k], int | float)
    assert r.headers["x-instance"] == "1"
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/livez")).status_code == 200


async def test_crud_contract(client: httpx.AsyncClient, rdb: redis.Redis) -> None:
    r = await client.post("/api/todos", json={"texto": "Tarea durante failover"})
    assert r.status_code == 201, r.text
    assert r.headers["x-instance"] == "1"
    todo = r.json()
    assert set(todo) == {"id", "texto", "completada", "createdAt", "instance"}
    assert todo["texto"] == "Tarea durante failover" and todo["completada"] is False
    assert todo["instance"] == "1" and todo["createdAt"].endswith("Z")
    r2 = await client.post("/api/todos", json={"texto": "  segunda  "})
    assert r2.json()["texto"] == "segunda"
    assert r2.json()["id"] != todo["id"]

    lst = await client.get("/api/todos")
    assert lst.status_code == 200
    assert [t["id"] for t in lst.json()] == [r2.json()["id"], todo["id"]]  # newest first
    assert lst.headers["x-total-count"] == "2" and "link" not in lst.headers
    one = await client.get(f"/api/todos/{todo['id']}")
    assert one.status_code == 200 and one.json() == todo

    p = await client.patch(f"/api/todos/{todo['id']}", json={"completada": True})
    assert p.status_code == 200 and p.json()["completada"] is True
    assert p.json()["texto"] == "Tarea durante failover"
    p = await client.patch(f"/api/todos/{todo['id']}", json={"texto": "editada"})
    assert p.json() == {**todo, "completada": True, "texto": "editada"}

    d = await client.delete(f"/api/todos/{todo['id']}")
    assert d.status_code == 204 and d.content == b""
    assert [t["id"] for t in (await client.get("/api/todos")).json()] == [r2.json()["id"]]
    assert (await client.delete(f"/api/todos/{todo['id']}")).status_code == 404


async def test_validation_errors(client: httpx.AsyncClient, rdb: redis.Redis) -> None:
    for payload in ({"texto": ""}, {"texto": "   "}, {"texto": "x" * 501}, {}, {"texto": 5}):
        r = await client.post("/api/todos", json=payload)
        assert r.status_code == 422, payload
        assert r.json()["error"] == "validation failed"
    assert (await client.post("/api/todos", json={"texto": "x" * 500})).status_code == 201
    r = await client.post("/api/todos", content=b'{"texto": ', headers=JSON)
    assert r.status_code == 400 and r.json()["error"] == "invalid JSON"
    r = await client.post("/api/todos", content=b'{"texto": "' + b"a" * 17 * 1024 + b'"}',
                          headers=JSON)
    assert r.status_code == 413 and r.json()["error"] == "request body too large"
    assert r.headers["x-instance"] == "1"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"texto": "'
        for _ in range(17):
            yield b"a" * 1024
        yield b'"}'

    r = await client.post("/api/todos", content=chunks(), headers=JSON)
    assert r.status_code == 413
    bad_patch = await client.patch("/api/todos/nope", json={})
    assert bad_patch.status_code == 422
    r = await client.patch("/api/todos/nope", json={"completada": True})
    assert r.status_code == 404
    assert r.json() == {"error": "todo not found", "detail": {"id": "nope"}}
    r = await client.patch("/api/todos/nope", json={"completada": "yes"})
    assert r.status_code == 422
    r = await client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "not found"
    assert rdb.hlen("todos:ids") == 1  # only the valid 500-char one


async def test_public_port_has_no_stress(client: httpx.AsyncClient) -> None:
    for path in ("/api/stress", "/api/stress/clear"):
        r = await client.post(path)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/json")


async def test_openapi_schema(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    post = spec["paths"]["/api/todos"]["post"]
    assert set(post["responses"]) == {"201", "400", "413", "415", "422", "429", "503", "507"}
    assert post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Todo"
    )
    assert "204" in spec["paths"]["/api/todos/{todo_id}"]["delete"]["responses"]
    assert "/api/stress" not in spec["paths"]


async def test_metrics(client: httpx.AsyncClient) -> None:
    await client.get("/api/todos")
    await client.get("/api/health")
    await client.get("/api/todos/nope")  # answered by FastAPI's route, not the fast path
    text = (await client.get("/metrics")).text
    assert 'todo_api_requests_total{method="GET",route="/api/todos",status="200"} 1.0' in text
    assert (
        'todo_api_requests_total{method="GET",route="/api/todos/{todo_id}",status="404"} 1.0'
        in text
    )
    assert "todo_api_request_duration_seconds_bucket" in text
    assert "todo_api_healthy 1.0" in text
    assert "todo_api_memory_limit_bytes" in text
    for name in ("todo_api_shed_requests_total", "todo_api_idempotent_replays_total",
                 "todo_api_redis_errors_total"):
        assert name in text


@pytest.mark.parametrize(
    ("write", "current", "inactive", "status", "source", "used_mb"),
    [
        (write_v2_tree, 450, 10, 503, "cgroup-v2", 440),
        # 480 of 512 MB would be 94%, but 200 MB of it is reclaimable page cache
        (write_v1_tree, 480, 200, 200, "cgroup-v1", 280),
    ],
)
async def test_health_from_cgroup(
    make_client: Callable[..., Any],
    tmp_path: Path,
    write: Callable[..., Path],
    current: int,
    inactive: int,
    status: int,
    source: str,
    used_mb: int,
) -> None:
    root = tmp_path / "cg"
    proc = write(root, current * MB, 512 * MB, inactive * MB)
    c, _ = await make_client(cgroup_root=str(root), proc_self_cgroup=str(proc))
    r = await c.get("/api/health")
    assert r.status_code == status, r.text
    b = r.json()
    assert b["status"] == ("OK" if status == 200 else "UNHEALTHY")
    assert (b["memorySource"], b["limitMB"], b["usedMB"]) == (source, 512, used_mb)
    assert ("reasons" in b) == (status == 503)
    assert all("memory" in x for x in b.get("reasons", []))
    assert (await c.get("/livez")).status_code == 200


async def test_health_paths_share_one_handler(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    c, rt = await make_client()
    routes = [r for r in build_router(rt, TodoService(rt)).routes if isinstance(r, APIRoute)]
    health = [r for r in routes if r.path in HEALTH_PATHS]
    assert sorted(r.path for r in health) == ["/api/health", "/readyz"]
    assert health[0].endpoint is health[1].endpoint  # one handler, two paths
    bodies = [(await c.get(p)).json() for p in HEALTH_PATHS]
    assert bodies[0] == bodies[1]
    # both still documented, with the Health schema for 200 and 503
    spec = (await c.get("/openapi.json")).json()
    for p in HEALTH_PATHS:
        responses = spec["paths"][p]["get"]["responses"]
        for code in ("200", "503"):
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/Health")
    # and one memory threshold, over both: shed-exempt, 503 together
    root = tmp_path / "cg"
    proc = write_v2_tree(root, current=500 * MB, limit=512 * MB)
    over, _ = await make_client(cgroup_root=str(root), proc_self_cgroup=str(proc))
    assert [(await over.get(p)).status_code for p in HEALTH_PATHS] == [503, 503]


def _gauge(text: str, name: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


@pytest.mark.parametrize("percent", [80, 75])
async def test_threshold_metrics(
    make_client: Callable[..., Any], tmp_path: Path, percent: int
) -> None:
    # what an alert rule compares with instead of a literal number:
    #   todo_api_memory_used_bytes / todo_api_memory_limit_bytes >= todo_api_unhealthy_ratio
    root = tmp_path / "cg"
    proc = write_v2_tree(root, current=100 * MB, limit=512 * MB)
    c, rt = await make_client(
        cgroup_root=str(root), proc_self_cgroup=str(proc), unhealthy_percent=percent
    )
    text = (await c.get("/metrics")).text
    ratio = _gauge(text, "todo_api_unhealthy_ratio")
    limit = _gauge(text, "todo_api_memory_limit_bytes")
    assert ratio == percent / 100 and limit == 512 * MB
    assert _gauge(text, "todo_api_memory_unhealthy_threshold_bytes") == limit * ratio
    assert _gauge(text, "todo_api_memory_used_bytes") / limit < ratio
    # the same comparison is the app's own: at the threshold it sheds and reports unhealthy
    (root / "system.slice/x/memory.current").write_text(f"{math.ceil(limit * ratio)}\n")
    rt.monitor.invalidate()
    assert (await c.get("/api/todos")).status_code == 429
    text = (await c.get("/metrics")).text
    assert _gauge(text, "todo_api_memory_used_bytes") / limit >= ratio
    assert (await c.get("/api/health")).status_code == 503


async def test_threshold_follows_the_cgroup_limit(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    root = tmp_path / "cg"
    proc = write_v2_tree(root, current=100 * MB, limit=512 * MB)
    c, rt = await make_client(cgroup_root=str(root), proc_self_cgroup=str(proc))
    await c.get("/metrics")
    (root / "system.slice/x/memory.max").write_text(f"{256 * MB}\n")  # systemctl set-property
    rt.monitor.invalidate()
    text = (await c.get("/metrics")).text
    assert _gauge(text, "todo_api_memory_limit_bytes") == 256 * MB
    assert _gauge(text, "todo_api_memory_unhealthy_threshold_bytes") == 256 * MB * 0.8


async def test_healthy_gauge_is_current_on_a_scrape_alone(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """Prometheus alerts on todo_api_healthy: a scrape must read it right even when nothing
    asked /api/health (no page open, no client probing)."""
    for name, current, healthy in (("ok", 100 * MB, 1.0), ("over", 500 * MB, 0.0)):
        root = tmp_path / name
        proc = write_v2_tree(root, current=current, limit=512 * MB)
        c, _ = await make_client(cgroup_root=str(root), proc_self_cgroup=str(proc))
        assert _gauge((await c.get("/metrics")).text, "todo_api_healthy") == healthy, name
