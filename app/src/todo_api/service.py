"""``TodoService``: every todo operation after parsing and validation, answered as a Response.

The FastAPI routes (``routes.py``) and the ASGI fast path (``fastpath.py``) both call it, so
both give the same answers; neither talks to the store itself."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from .errors import error_response
from .models import (
    IDEMPOTENCY_KEY_MAX,
    LB_KEY_PREFIX,
    LIST_DEFAULT_LIMIT,
    TODOS_PATH,
    Order,
    TodoIn,
    TodoPatch,
)
from .runtime import Runtime

JSON_MEDIA = "application/json"


def fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of a validated body: what an Idempotency-Key is bound to."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def lb_key(request_ids: Sequence[str]) -> str | None:
    """The key of a POST without Idempotency-Key: the load balancer's request id, when there is
    exactly one usable X-Request-ID (anything else: a plain create, as the seed did)."""
    if len(request_ids) != 1:
        return None
    rid = request_ids[0].strip()
    if not rid or len(rid) + len(LB_KEY_PREFIX) > IDEMPOTENCY_KEY_MAX:
        return None
    return LB_KEY_PREFIX + rid


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _created(body: str) -> Response:
    return Response(body, status_code=201, media_type=JSON_MEDIA)


def _not_found(todo_id: str) -> Response:
    return error_response(404, "todo not found", {"id": todo_id})


class TodoService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.store = rt.store
        self.settings = rt.settings

    async def list(
        self, limit: int = LIST_DEFAULT_LIMIT, cursor: str | None = None, order: Order = "newest"
    ) -> Response:
        page = await self.store.list_page(limit, cursor, order)
        headers = {"X-Total-Count": str(page.total)}
        if page.next_cursor is not None:
            # relative (never built from Host): the same path behind the load balancer
            url = f"{TODOS_PATH}?limit={limit}&order={order}&cursor={page.next_cursor}"
            headers["Link"] = f'<{url}>; rel="next"'
        return Response(page.body, media_type=JSON_MEDIA, headers=headers)

    async def get(self, todo_id: str) -> Response:
        raw = await self.store.get_json(todo_id)
        if raw is None:
            return _not_found(todo_id)
        return Response(raw, media_type=JSON_MEDIA)

    async def create(
        self, payload: TodoIn, idempotency_key: str | None, request_ids: Sequence[str] = ()
    ) -> Response:
        """``idempotency_key``: the client's (wins); else the load balancer's request id."""
        s = self.settings
        todo = {
            "id": uuid.uuid4().hex,
            "texto": payload.texto,
            "completada": False,
            "createdAt": _now(),
            "instance": s.instance,
        }
        body = json.dumps(todo, separators=(",", ":"))
        key, ttl = idempotency_key, s.idempotency_ttl
        if key is None:
            key, ttl = lb_key(request_ids), s.lb_key_ttl
        if key is None:
            await self.store.create(todo, todo_json=body)
            return _created(body)
        fp = fingerprint(payload.model_dump())
        record = json.dumps({"state": "done", "fp": fp, "status": 201, "body": body})
        done = await self.store.create(todo, key, fp, record, ttl, todo_json=body)
        if done.outcome == "replay":
            self.rt.metrics.idempotent_replays.inc()
            return Response(
                done.body,
                status_code=done.status,
                media_type=JSON_MEDIA,
                headers={"Idempotent-Replayed": "true"},
            )
        if done.outcome == "mismatch":
            return error_response(
                422,
                "idempotency key reused with a different body",
                # a keyless POST's key is the load balancer's: not the client's to see
                {"idempotencyKey": idempotency_key} if idempotency_key is not None else None,
            )
        return _created(body)

    async def patch(self, todo_id: str, payload: TodoPatch) -> Response:
        todo = await self.store.patch(todo_id, payload.model_dump(exclude_none=True))
        if todo is None:
            return _not_found(todo_id)
        return JSONResponse(todo)

    async def delete(self, todo_id: str) -> Response:
        if not await self.store.delete(todo_id):
            return _not_found(todo_id)
        return Response(status_code=204)
