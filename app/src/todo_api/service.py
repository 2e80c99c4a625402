"""``TodoService``: every todo operation after parsing and validation, answered as a Response.

The FastAPI routes (``routes.py``) and the ASGI fast path (``fastpath.py``) both call it, so
both give the same answers; neither talks to the store itself."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from .errors import error_response
from .models import TodoIn, TodoPatch
from .runtime import Runtime

JSON_MEDIA = "application/json"


def fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of a validated body: what an Idempotency-Key is bound to."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _created(body: str) -> Response:
    return Response(body, status_code=201, media_type=JSON_MEDIA)


def _not_found(todo_id: str) -> Response:
    return error_response(404, "todo not found", {"id": todo_id})


def _key_conflict(error: str, key: str) -> Response:
    return error_response(409, error, {"idempotencyKey": key}, {"Retry-After": "1"})


class TodoService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.store = rt.store
        self.settings = rt.settings

    async def list(self) -> Response:
        return Response(await self.store.list_json(), media_type=JSON_MEDIA)

    async def create(self, payload: TodoIn, idempotency_key: str | None) -> Response:
        store, s = self.store, self.settings
        todo = {
            "id": uuid.uuid4().hex,
            "texto": payload.texto,
            "completada": False,
            "createdAt": _now(),
            "instance": s.instance,
        }
        body = json.dumps(todo, separators=(",", ":"))
        if idempotency_key is None:
            await store.create(todo, todo_json=body)
            return _created(body)
        fp = fingerprint(payload.model_dump())
        token = uuid.uuid4().hex
        begin = await store.idem_begin(idempotency_key, fp, token, s.idempotency_pending_ttl)
        if begin.outcome == "done":
            self.rt.metrics.idempotent_replays.inc()
            return Response(
                begin.body,
                status_code=begin.status,
                media_type=JSON_MEDIA,
                headers={"Idempotent-Replayed": "true"},
            )
        if begin.outcome == "mismatch":
            return error_response(
                422,
                "idempotency key reused with a different body",
                {"idempotencyKey": idempotency_key},
            )
        if begin.outcome == "pending":
            return _key_conflict(
                "request with this idempotency key is still in flight", idempotency_key
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
            return _key_conflict("idempotency key taken over by another request", idempotency_key)
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
