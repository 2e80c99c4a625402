"""Readiness without FastAPI (fastpath.HealthFast): the same bytes, status, headers, metrics and
state-change lines as FastAPI's route gives, for GET and HEAD on both paths."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import todo_api.app as app_module
from todo_api import server
from todo_api.cgroup import MB, MemoryReading
from todo_api.fastpath import HealthFast, json_response_body
from todo_api.models import HEALTH_PATHS
from todo_api.runtime import Runtime

Client = tuple[httpx.AsyncClient, Runtime]


async def _pair(make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> list[Client]:
    """Two instances on one Redis: the fast path's, and one whose readiness is FastAPI's."""
    fast = await make_client()
    with monkeypatch.context() as m:
        m.setattr(app_module, "HEALTH_PATHS", ())  # no HealthFast: the route answers
        framework = await make_client()
    return [fast, framework]


def _fix_memory(rt: Runtime, used_mb: int) -> None:
    """A fixed reading (RSS moves between two requests; the bytes are compared)."""
    reading = MemoryReading(used_mb * MB, 512 * MB, 100 * MB, "cgroup-v2")
    rt.monitor.read = lambda: reading  # type: ignore[method-assign]


def _requests(rt: Runtime) -> dict[tuple[str, str, str], float]:
    out = {}
    for metric in rt.metrics.requests.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                out[(s.labels["method"], s.labels["route"], s.labels["status"])] = s.value
    return out


@pytest.mark.parametrize("used_mb", [100, 450])  # OK 200, UNHEALTHY 503
async def test_the_fast_path_answers_what_fastapi_answers(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, used_mb: int
) -> None:
    pair = await _pair(make_client, monkeypatch)
    answers = []
    for c, rt in pair:
        _fix_memory(rt, used_mb)
        got = []
        for method in ("GET", "HEAD"):
            for path in HEALTH_PATHS:
                r = await c.request(method, path)
                got.append((method, path, r.status_code, r.headers.raw, r.content))
        answers.append(got)
    assert answers[0] == answers[1]
    assert {a[2] for a in answers[0]} == {200 if used_mb == 100 else 503}
    assert [a[4] == b"" for a in answers[0]] == [False, False, True, True]  # HEAD: no body
    # the same route labels and statuses in the metrics
    assert _requests(pair[0][1]) == _requests(pair[1][1])
    status = "200" if used_mb == 100 else "503"
    assert _requests(pair[0][1])[("HEAD", "/readyz", status)] == 1


async def test_degraded_and_back_and_the_state_lines(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = await _pair(make_client, monkeypatch)
    lines: list[list[tuple[str, dict[str, Any]]]] = []
    for c, rt in pair:
        _fix_memory(rt, 100)
        seen: list[tuple[str, dict[str, Any]]] = []
        lines.append(seen)

        def record(level: int, msg: str, *args: object, seen: Any = seen, **kw: Any) -> None:
            seen.append((msg, dict(kw.get("extra") or {})))

        monkeypatch.setattr(rt.log, "log", record)
        assert (await c.get("/api/health")).json()["status"] == "OK"
        rt.health.mark_redis_down()  # cached for 0.5 s: DEGRADED, still 200
        r = await c.get("/api/health")
        assert (r.status_code, r.json()["status"], r.json()["redis"]) == (200, "DEGRADED", "down")
        rt.health._redis_ok = None  # the next check asks Redis again
        assert (await c.get("/readyz")).json()["status"] == "OK"
    assert lines[0] == lines[1]
    assert [m for m, _ in lines[0]] == ["health: DEGRADED", "health: back to OK"]


async def test_a_root_path_is_left_to_fastapi(
    make_client: Callable[..., Any]
) -> None:
    _, rt = await make_client()
    handler = HealthFast(rt, "/api/health")
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/api/health", "root_path": "/x"}
    assert not await handler(scope, "GET", b"", receive, send)
    assert sent == []
    assert await handler({**scope, "root_path": ""}, "GET", b"", receive, send)
    assert sent[0]["status"] == 200
    assert [k for k, _ in sent[0]["headers"]] == [b"content-length", b"content-type"]
    with pytest.raises(ValueError, match="readiness"):
        HealthFast(rt, "/livez")


def test_the_body_is_what_jsonresponse_renders() -> None:
    from starlette.responses import JSONResponse

    content = {"status": "OK", "instance": "ñ1", "rssMB": 12.3, "reasons": ["a \"b\""], "n": 1}
    assert json_response_body(content) == JSONResponse(content).body


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_start_up_objects_are_frozen_and_gen0_collected_less_often(restore_gc: None) -> None:
    before = gc.get_threshold()
    server.tune_gc()
    assert gc.get_freeze_count() > 10_000  # this test process' modules, at least
    assert gc.get_threshold() == (server.GC_GEN0_THRESHOLD, before[1], before[2])
    assert gc.get_count()[0] < 100  # just collected
