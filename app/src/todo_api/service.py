"""``TodoService``: every todo operation after parsing and validation, answered as a Response.

The FastAPI routes (``routes.py``) and the ASGI fast path (``fastpath.py``) both call it, so
both give the same answers; neither talks to the store itself."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii as _json_ascii  # json.dumps' str encoder

from starlette.responses import JSONResponse, Response

from .errors import error_response
from .logs import Clock
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
_JSON_CT = (b"content-type", JSON_MEDIA.encode())
_REPLAYED = (b"idempotent-replayed", b"true")


class JsonBytes(Response):
    """``Response(body, status_code, media_type="application/json", headers=...)`` of a body
    already encoded, built without ``render``/``init_headers``: the same ``body``,
    ``status_code`` and ``raw_headers`` (the given headers, then content-length and
    content-type), so the same bytes on the wire (test_service checks them against Response)."""

    media_type = JSON_MEDIA

    def __init__(
        self, body: bytes, status_code: int = 200, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        length = (b"content-length", str(len(body)).encode())
        self.raw_headers = [*headers, length, _JSON_CT] if headers else [length, _JSON_CT]


def texto_fingerprint(texto: str) -> str:
    """sha256 of ``json.dumps(TodoIn(texto=texto).model_dump(), sort_keys=True)`` without the
    dict and the encoder:
    json.dumps of ``{"texto": texto}`` (one key, default separators, ASCII) is this string."""
    return hashlib.sha256(f'{{"texto": {_json_ascii(texto)}}}'.encode()).hexdigest()


def new_id() -> str:
    """``uuid.uuid4().hex``: 16 random bytes with the version (4) and variant (RFC 4122) bits."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


def lb_key(request_ids: Sequence[str]) -> str | None:
    """The key of a POST without Idempotency-Key: the load balancer's request id, when there is
    exactly one usable X-Request-ID (anything else: a plain create, as the seed did)."""
    if len(request_ids) != 1:
        return None
    rid = request_ids[0].strip()
    if not rid or len(rid) + len(LB_KEY_PREFIX) > IDEMPOTENCY_KEY_MAX:
        return None
    return LB_KEY_PREFIX + rid


_clock = Clock()


def _now() -> str:
    """``datetime.now(UTC)`` as ISO 8601 to the millisecond: 2026-12-02T21:30:00.123Z."""
    return _clock.iso(time.time())


def _created(body: str) -> Response:
    return JsonBytes(body.encode(), 201)


def _not_found(todo_id: str) -> Response:
    return error_response(404, "todo not found", {"id": todo_id})


class TodoService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.store = rt.store
        self.settings = rt.settings
        self._instance_json = _json_ascii(rt.settings.instance)

    async def list(
        self, limit: int = LIST_DEFAULT_LIMIT, cursor: str | None = None, order: Order = "newest"
    ) -> Response:
        page = await self.store.list_page(limit, cursor, order)
        headers = [(b"x-total-count", str(page.total).encode())]
        if page.next_cursor is not None:
            # relative (never built from Host): the same path behind the load balancer
            url = f"{TODOS_PATH}?limit={limit}&order={order}&cursor={page.next_cursor}"
            headers.append((b"link", f'<{url}>; rel="next"'.encode("latin-1")))
        return JsonBytes(page.body, headers=headers)

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
        texto = payload.texto
        tid, created = new_id(), _now()
        todo = {
            "id": tid,
            "texto": texto,
            "completada": False,
            "createdAt": created,
            "instance": s.instance,
        }
        # json.dumps(todo, separators=(",", ":")), from its parts (ids and times need no escape)
        body = (
            f'{{"id":"{tid}","texto":{_json_ascii(texto)},"completada":false,'
            f'"createdAt":"{created}","instance":{self._instance_json}}}'
        )
        key, ttl = idempotency_key, s.idempotency_ttl
        if key is None:
            key, ttl = lb_key(request_ids), s.lb_key_ttl
        if key is None:
            await self.store.create(todo, todo_json=body)
            return _created(body)
        fp = texto_fingerprint(texto)
        # json.dumps({"state": "done", "fp": fp, "status": 201, "body": body}), from its parts
        record = f'{{"state": "done", "fp": "{fp}", "status": 201, "body": {_json_ascii(body)}}}'
        done = await self.store.create(todo, key, fp, record, ttl, todo_json=body)
        if done.outcome == "replay":
            self.rt.metrics.idempotent_replays.inc()
            return JsonBytes(done.body.encode(), done.status, [_REPLAYED])
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
