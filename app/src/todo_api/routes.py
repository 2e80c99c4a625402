"""Public API (the seed's contract) on the public listener."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, model_validator

from .errors import ErrorBody, error_response, install_error_handlers
from .fastpath import FastPath
from .middleware import PublicMiddleware
from .runtime import Runtime

Texto = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class TodoIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"texto": "Tarea durante failover"}]})
    texto: Texto


class TodoPatch(BaseModel):
    texto: Texto | None = None
    completada: StrictBool | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> TodoPatch:
        if self.texto is None and self.completada is None:
            raise ValueError("give at least one of 'texto' or 'completada'")
        return self


class Todo(BaseModel):
    id: str
    texto: str
    completada: bool
    createdAt: datetime = Field(description="ISO 8601, UTC")
    instance: str = Field(description="instance that created the todo")


class Health(BaseModel):
    status: Literal["OK", "UNHEALTHY"]
    instance: str
    rssMB: float
    usedMB: float
    limitMB: float
    memoryPercent: float
    thresholdPercent: int
    memorySource: Literal["cgroup-v2", "cgroup-v1", "fallback"]
    redis: Literal["ok", "down"]
    reasons: list[str] | None = None


Responses = dict[int | str, dict[str, Any]]

E503: Responses = {
    503: {"model": ErrorBody, "description": "overloaded (shed) or storage unavailable"}
}
E_BODY: Responses = {
    400: {"model": ErrorBody, "description": "invalid JSON"},
    413: {"model": ErrorBody, "description": "body over 16 KiB"},
    422: {"model": ErrorBody, "description": "validation failed"},
}
E404: Responses = {404: {"model": ErrorBody, "description": "unknown id"}}


def _fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class TodoService:
    """GET/POST /api/todos after parsing and validation: shared by the FastAPI routes and the
    ASGI fast path (``fastpath.py``), so both give the same answers."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.store = rt.store
        self.settings = rt.settings

    async def list(self) -> Response:
        return Response(await self.store.list_json(), media_type="application/json")

    async def create(self, payload: TodoIn, idempotency_key: str | None) -> Response:
        store, s, rt = self.store, self.settings, self.rt
        todo = {
            "id": uuid.uuid4().hex,
            "texto": payload.texto,
            "completada": False,
            "createdAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            ),
            "instance": s.instance,
        }
        body = json.dumps(todo, separators=(",", ":"))
        if idempotency_key is None:
            await store.create(todo, todo_json=body)
            return Response(body, status_code=201, media_type="application/json")
        fp = _fingerprint(payload.model_dump())
        token = uuid.uuid4().hex
        begin = await store.idem_begin(idempotency_key, fp, token, s.idempotency_pending_ttl)
        if begin.outcome == "done":
            rt.metrics.idempotent_replays.inc()
            return Response(
                begin.body,
                status_code=begin.status,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        if begin.outcome == "mismatch":
            return error_response(
                422,
                "idempotency key reused with a different body",
                {"idempotencyKey": idempotency_key},
            )
        if begin.outcome == "pending":
            return error_response(
                409,
                "request with this idempotency key is still in flight",
                {"idempotencyKey": idempotency_key},
                {"Retry-After": "1"},
            )
        record = json.dumps(
            {"state": "done", "fp": fp, "token": token, "status": 201, "body": body}
        )
        try:
            ok = await store.create(
                todo, idempotency_key, token, record, s.idempotency_ttl, todo_json=body
            )
        except Exception:
            # if Redis is gone the pending marker expires by itself (pending TTL)
            with contextlib.suppress(Exception):
                await store.idem_abort(idempotency_key, token)
            raise
        if not ok:
            return error_response(
                409,
                "idempotency key taken over by another request",
                {"idempotencyKey": idempotency_key},
                {"Retry-After": "1"},
            )
        return Response(body, status_code=201, media_type="application/json")


def build_router(rt: Runtime, svc: TodoService) -> APIRouter:
    r = APIRouter()
    store = rt.store
    s = rt.settings

    @r.get(
        "/api/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "not ready"}},
        tags=["health"],
    )
    async def api_health() -> Response:
        status, body = await rt.health.check()
        return JSONResponse(body, status_code=status)

    @r.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "not ready"}},
        tags=["health"],
    )
    async def readyz() -> Response:
        status, body = await rt.health.check()
        return JSONResponse(body, status_code=status)

    @r.get("/livez", tags=["health"])
    async def livez() -> dict[str, str]:
        return {"status": "alive", "instance": s.instance}

    @r.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        rt.health.memory()
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @r.get("/api/todos", response_model=list[Todo], responses=E503, tags=["todos"])
    async def list_todos() -> Response:
        return await svc.list()

    @r.post(
        "/api/todos",
        status_code=201,
        response_model=Todo,
        responses={
            **E_BODY,
            **E503,
            409: {"model": ErrorBody, "description": "same Idempotency-Key still in flight"},
        },
        tags=["todos"],
    )
    async def create_todo(
        payload: TodoIn,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=255,
                description="makes the POST retry-safe for TODO_API_IDEMPOTENCY_TTL seconds; "
                "replays carry Idempotent-Replayed: true; other body -> 422; in flight -> 409",
            ),
        ] = None,
    ) -> Response:
        return await svc.create(payload, idempotency_key)

    @r.patch(
        "/api/todos/{todo_id}",
        response_model=Todo,
        responses={**E_BODY, **E404, **E503},
        tags=["todos"],
    )
    async def patch_todo(todo_id: str, payload: TodoPatch) -> Response:
        fields = payload.model_dump(exclude_none=True)
        todo = await store.patch(todo_id, fields)
        if todo is None:
            return error_response(404, "todo not found", {"id": todo_id})
        return JSONResponse(todo)

    @r.delete(
        "/api/todos/{todo_id}",
        status_code=204,
        response_class=Response,
        responses={**E404, **E503},
        tags=["todos"],
    )
    async def delete_todo(todo_id: str) -> Response:
        if not await store.delete(todo_id):
            return error_response(404, "todo not found", {"id": todo_id})
        return Response(status_code=204)

    return r


def create_public_app(rt: Runtime) -> FastAPI:
    app = FastAPI(
        title="halab todo API",
        version="0.1.0",
        description="Public listener. Errors are JSON {error, detail}; every response carries "
        "X-Instance. While memory is over the threshold every request except /api/health, "
        "/readyz, /livez and /metrics is shed with 503 + Retry-After.",
    )
    app.state.health = rt.health
    app.state.runtime = rt
    install_error_handlers(app, rt.metrics, rt.settings.retry_after_seconds)
    svc = TodoService(rt)
    app.include_router(build_router(rt, svc))
    app.add_middleware(PublicMiddleware, rt=rt, fast=FastPath(rt, svc, TodoIn))

    return app
