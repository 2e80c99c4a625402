"""The public router (the seed's contract): each route parses and validates, then calls the
service (todos) or the runtime (health, metrics). No storage access and no app wiring here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .models import (
    E404,
    E409,
    E503,
    E_BODY,
    HEALTH_503,
    HEALTH_PATHS,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_MAX,
    LIVEZ_PATH,
    METRICS_PATH,
    TODO_PATH,
    TODOS_PATH,
    Health,
    Todo,
    TodoIn,
    TodoPatch,
)
from .runtime import Runtime
from .service import TodoService

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        description="makes the POST retry-safe for TODO_API_IDEMPOTENCY_TTL seconds; "
        "replays carry Idempotent-Replayed: true; other body -> 422; in flight -> 409",
    ),
]


def build_router(rt: Runtime, svc: TodoService) -> APIRouter:
    r = APIRouter()

    async def health() -> Response:
        """Readiness: 200 when memory is under the threshold and Redis answers, else 503."""
        status, body = await rt.health.check()
        return JSONResponse(body, status_code=status)

    for path in HEALTH_PATHS:
        r.add_api_route(
            path, health, methods=["GET"], response_model=Health, responses=HEALTH_503,
            tags=["health"],
        )

    @r.get(LIVEZ_PATH, tags=["health"])
    async def livez() -> dict[str, str]:
        return {"status": "alive", "instance": rt.settings.instance}

    @r.get(METRICS_PATH, tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        rt.health.memory()
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @r.get(TODOS_PATH, response_model=list[Todo], responses=E503, tags=["todos"])
    async def list_todos() -> Response:
        return await svc.list()

    @r.post(
        TODOS_PATH,
        status_code=201,
        response_model=Todo,
        responses={**E_BODY, **E503, **E409},
        tags=["todos"],
    )
    async def create_todo(payload: TodoIn, idempotency_key: IdempotencyKey = None) -> Response:
        return await svc.create(payload, idempotency_key)

    @r.patch(TODO_PATH, response_model=Todo, responses={**E_BODY, **E404, **E503}, tags=["todos"])
    async def patch_todo(todo_id: str, payload: TodoPatch) -> Response:
        return await svc.patch(todo_id, payload)

    @r.delete(
        TODO_PATH,
        status_code=204,
        response_class=Response,
        responses={**E404, **E503},
        tags=["todos"],
    )
    async def delete_todo(todo_id: str) -> Response:
        return await svc.delete(todo_id)

    return r
