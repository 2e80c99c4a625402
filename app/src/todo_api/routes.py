"""The public router (the seed's contract): each route parses and validates, then calls the
service (todos) or the runtime (health, metrics). No storage access and no app wiring here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .models import (
    CURSOR_MAX,
    CURSOR_PATTERN,
    E404,
    E_BODY,
    E_COMMON,
    HEALTH_503,
    HEALTH_PATHS,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_MAX,
    LIST_DEFAULT_LIMIT,
    LIST_HEADERS,
    LIST_MAX_LIMIT,
    LIVEZ_PATH,
    METRICS_PATH,
    REQUEST_ID_HEADER,
    TODO_PATH,
    TODOS_PATH,
    Health,
    Order,
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
        "replays carry Idempotent-Replayed: true; the same key with another body -> 422; "
        "the header twice -> 400. Wins over X-Request-ID",
    ),
]
RequestId = Annotated[
    str | None,
    Header(
        alias=REQUEST_ID_HEADER,
        description="set by the load balancer (its request id): the key of a POST without "
        "Idempotency-Key, kept TODO_API_LB_KEY_TTL seconds, so the balancer's own retry on "
        "another instance replays instead of storing twice. Ignored unless there is exactly "
        "one, of 1..252 characters",
    ),
]
Limit = Annotated[
    int,
    Query(ge=1, le=LIST_MAX_LIMIT, description=f"todos per page (max {LIST_MAX_LIMIT})"),
]
Cursor = Annotated[
    str | None,
    Query(
        pattern=CURSOR_PATTERN,
        max_length=CURSOR_MAX,
        description="opaque: copy it from the previous page's Link rel=next",
    ),
]
OrderQ = Annotated[Order, Query(description="newest first (default) or oldest first")]

# stateful tests (and clients) follow a created todo to its own operations
_TODO_LINKS: dict[str, Any] = {
    name: {"operationId": op, "parameters": {"todo_id": "$response.body#/id"}}
    for name, op in (("GetTodo", "get_todo"), ("PatchTodo", "patch_todo"),
                     ("DeleteTodo", "delete_todo"))
}


def build_router(rt: Runtime, svc: TodoService) -> APIRouter:
    r = APIRouter()

    async def health() -> Response:
        """Readiness: 503 only when memory is over the threshold (UNHEALTHY); Redis
        unreachable is 200 DEGRADED (every instance shares it: none is to be ejected).
        Served by fastpath.HealthFast with the same answer; here for the OpenAPI schema and
        whatever the fast path leaves to FastAPI."""
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

    @r.get(
        TODOS_PATH,
        response_model=list[Todo],
        responses={200: {"headers": LIST_HEADERS}, **E_COMMON},
        tags=["todos"],
        operation_id="list_todos",
    )
    async def list_todos(
        limit: Limit = LIST_DEFAULT_LIMIT, cursor: Cursor = None, order: OrderQ = "newest"
    ) -> Response:
        """One page of todos, newest first by default; the next page is in `Link`."""
        return await svc.list(limit, cursor, order)

    @r.post(
        TODOS_PATH,
        status_code=201,
        response_model=Todo,
        responses={201: {"links": _TODO_LINKS}, **E_BODY, **E_COMMON},
        tags=["todos"],
        operation_id="create_todo",
    )
    async def create_todo(
        request: Request,
        payload: TodoIn,
        idempotency_key: IdempotencyKey = None,
        request_id: RequestId = None,
    ) -> Response:
        # every X-Request-ID, not FastAPI's first: the fast path sees them all too
        rids = request.headers.getlist(REQUEST_ID_HEADER)
        return await svc.create(payload, idempotency_key, rids)

    @r.get(
        TODO_PATH,
        response_model=Todo,
        responses={**E404, **E_COMMON},
        tags=["todos"],
        operation_id="get_todo",
    )
    async def get_todo(todo_id: str) -> Response:
        return await svc.get(todo_id)

    @r.patch(
        TODO_PATH,
        response_model=Todo,
        responses={**E_BODY, **E404, **E_COMMON},
        tags=["todos"],
        operation_id="patch_todo",
    )
    async def patch_todo(todo_id: str, payload: TodoPatch) -> Response:
        return await svc.patch(todo_id, payload)

    @r.delete(
        TODO_PATH,
        status_code=204,
        response_class=Response,
        responses={**E404, **E_COMMON},
        tags=["todos"],
        operation_id="delete_todo",
    )
    async def delete_todo(todo_id: str) -> Response:
        return await svc.delete(todo_id)

    return r
