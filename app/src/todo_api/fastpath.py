"""ASGI fast paths: ``GET``/``POST /api/todos`` (``FastPath``) and readiness, ``GET /api/health``
and ``GET /readyz`` (``HealthFast``; HEAD is the middleware's GET without a body).

Profiled under wrk, FastAPI's routing, dependency solving and its middleware stack cost about
half the CPU of a ``GET /api/todos``. For requests FastAPI would accept without an error, this
answers the same way without going through it: the same ``TodoService`` code, the same
``TodoIn`` model validation and query limits, the same Redis-error and internal-error (500)
responses. Whatever it is not sure about (a query parameter out of range, repeated or unknown,
a body without Content-Type, an empty/invalid JSON body, a body that fails validation, an odd
``Idempotency-Key``, a ``root_path``) is handed to FastAPI untouched, so every error shape stays
FastAPI's. The media type (415) and a repeated ``Idempotency-Key`` (400) are the middleware's,
before either. The OpenAPI schema still comes from the FastAPI routes. (FastAPI's native
OpenTelemetry is off in this app, see app.py: no OpenTelemetry SDK is installed.)

Readiness is polled by the load balancer, Prometheus and the page: ``HealthFast`` runs the same
``HealthChecker.check()`` (state changes logged once, gauges set) and sends the bytes FastAPI's
``JSONResponse`` would (body, status, ``content-length`` then ``content-type``); the route stays
in FastAPI for the OpenAPI schema and for anything it does not answer (a ``root_path``).
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import internal_error_response, redis_error_response
from .models import (
    CURSOR_PATTERN,
    HEALTH_PATHS,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_MAX,
    LIST_DEFAULT_LIMIT,
    LIST_MAX_LIMIT,
    ORDERS,
    REQUEST_ID_HEADER,
    TODOS_PATH,
    Order,
    TodoIn,
)
from .runtime import Runtime
from .service import TodoService

JSON_CT = b"application/json"
IDEMPOTENCY_KEY = IDEMPOTENCY_KEY_HEADER.lower().encode()
REQUEST_ID = REQUEST_ID_HEADER.lower().encode()
_CURSOR = re.compile(CURSOR_PATTERN)
_LIMIT = re.compile(r"^[1-9][0-9]{0,2}$")  # what int() takes beyond this ("+5", " 5") is FastAPI's


def parse_list_query(query: bytes) -> tuple[int, str | None, Order] | None:
    """(limit, cursor, order) of a plain, valid query; None to let FastAPI answer."""
    limit: int = LIST_DEFAULT_LIMIT
    cursor: str | None = None
    order: Order = "newest"
    if not query:
        return limit, cursor, order
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    seen: set[str] = set()
    for k, v in pairs:
        if k in seen:
            return None
        seen.add(k)
        if k == "limit" and _LIMIT.fullmatch(v) and int(v) <= LIST_MAX_LIMIT:
            limit = int(v)
        elif k == "cursor" and _CURSOR.fullmatch(v):
            cursor = v
        elif k == "order" and v in ORDERS:
            order = "newest" if v == "newest" else "oldest"
        else:
            return None
    return limit, cursor, order


class FastPath:
    """The middleware's ``FastHandler`` for ``GET``/``POST /api/todos``."""

    path = TODOS_PATH
    route = TODOS_PATH  # the route label of what it answers (metrics)

    def __init__(self, rt: Runtime, svc: TodoService) -> None:
        self.rt = rt
        self.svc = svc
        self.retry_after = rt.settings.retry_after_seconds

    @staticmethod
    def handles(method: str, path: str) -> bool:
        return path == TODOS_PATH and (method == "GET" or method == "POST")

    def _parse_post(
        self, scope: Scope, body: bytes
    ) -> tuple[TodoIn, str | None, list[str]] | None:
        """(validated payload, idempotency key, request ids) or None to let FastAPI answer."""
        if not body or scope.get("root_path"):
            return None
        ctype: bytes | None = None
        key: bytes | None = None
        rids: list[str] = []
        for k, v in scope["headers"]:
            if k == b"content-type":
                if ctype is None:
                    ctype = v
            elif k == IDEMPOTENCY_KEY:
                if key is not None:
                    return None  # repeated header (the middleware answers 400 before this)
                key = v
            elif k == REQUEST_ID:
                rids.append(v.decode("latin-1"))
        if ctype is None or ctype.split(b";", 1)[0].strip().lower() != JSON_CT:
            return None
        skey: str | None = None
        if key is not None:
            skey = key.decode("latin-1")
            if not 1 <= len(skey) <= IDEMPOTENCY_KEY_MAX:
                return None
        try:
            # pydantic's own JSON parser (a third of json.loads + model_validate): whatever it
            # refuses (a BOM, UTF-16, deep nesting...) goes to FastAPI, which may still take it
            payload = TodoIn.model_validate_json(body)
        except ValueError:  # pydantic's ValidationError is a ValueError
            return None
        return payload, skey, rids

    async def __call__(
        self, scope: Scope, method: str, body: bytes, receive: Receive, send: Send
    ) -> bool:
        """Answer the request and return True, or return False having sent nothing."""
        if method == "GET":
            if scope.get("root_path"):
                return False
            query = parse_list_query(scope.get("query_string", b""))
            if query is None:
                return False
            call = self.svc.list(*query)
        else:
            parsed = self._parse_post(scope, body)
            if parsed is None:
                return False
            payload, key, rids = parsed
            call = self.svc.create(payload, key, rids)
        response: Response
        try:
            response = await call
        except RedisError as exc:
            response = redis_error_response(
                exc, self.rt.metrics, self.rt.health, self.retry_after
            )
        except Exception as exc:
            # as Starlette's ServerErrorMiddleware: answer 500, then let the error propagate
            await internal_error_response(exc)(scope, receive, send)
            raise
        await response(scope, receive, send)
        return True


def json_response_body(content: object) -> bytes:
    """What Starlette's ``JSONResponse`` renders (``JSONResponse.render``)."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


class HealthFast:
    """The middleware's ``FastHandler`` for one readiness path (``/api/health`` or ``/readyz``):
    the answer of routes.py's ``health`` without FastAPI's routing, dependencies and Response."""

    def __init__(self, rt: Runtime, path: str) -> None:
        if path not in HEALTH_PATHS:
            raise ValueError(f"not a readiness path: {path}")
        self.rt = rt
        self.path = path
        self.route = path  # FastAPI's route label for it

    def handles(self, method: str, path: str) -> bool:
        return method == "GET" and path == self.path

    async def __call__(
        self, scope: Scope, method: str, body: bytes, receive: Receive, send: Send
    ) -> bool:
        if scope.get("root_path"):
            return False
        try:
            status, content = await self.rt.health.check()
        except Exception as exc:
            # as Starlette's ServerErrorMiddleware: answer 500, then let the error propagate
            await internal_error_response(exc)(scope, receive, send)
            raise
        data = json_response_body(content)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(data)).encode("latin-1")),
                    (b"content-type", JSON_CT),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
        return True
