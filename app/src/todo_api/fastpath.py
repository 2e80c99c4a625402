"""ASGI fast path for the two hot routes, ``GET /api/todos`` and ``POST /api/todos``.

Profiled under wrk, FastAPI's routing, dependency solving and its middleware stack cost about
half the CPU of a ``GET /api/todos``. For requests FastAPI would accept without an error, this
answers the same way without going through it: the same ``TodoService`` code, the same
``TodoIn`` model validation, the same Redis-error (503) and internal-error (500) responses.
Whatever it is not sure about (other content types, an empty/invalid JSON body, a body that
fails validation, an absent-but-odd or repeated ``Idempotency-Key``, a ``root_path``) is handed
to FastAPI untouched, so every error shape stays FastAPI's. The OpenAPI schema still comes
from the FastAPI routes. (FastAPI's own OpenTelemetry hooks are skipped on these two routes;
this service configures no OpenTelemetry SDK.)
"""

from __future__ import annotations

import json

from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import internal_error_response, redis_error_response
from .models import IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX, TODOS_PATH, TodoIn
from .runtime import Runtime
from .service import TodoService

JSON_CT = b"application/json"
IDEMPOTENCY_KEY = IDEMPOTENCY_KEY_HEADER.lower().encode()


class FastPath:
    """The middleware's ``FastHandler`` for ``GET``/``POST /api/todos``."""

    route = TODOS_PATH  # the route label of what it answers (metrics)

    def __init__(self, rt: Runtime, svc: TodoService) -> None:
        self.rt = rt
        self.svc = svc
        self.retry_after = rt.settings.retry_after_seconds

    @staticmethod
    def handles(method: str, path: str) -> bool:
        return path == TODOS_PATH and (method == "GET" or method == "POST")

    def _parse_post(self, scope: Scope, body: bytes) -> tuple[TodoIn, str | None] | None:
        """(validated payload, idempotency key) or None to let FastAPI answer."""
        if not body or scope.get("root_path"):
            return None
        ctype: bytes | None = None
        key: bytes | None = None
        for k, v in scope["headers"]:
            if k == b"content-type":
                if ctype is None:
                    ctype = v
            elif k == IDEMPOTENCY_KEY:
                if key is not None:
                    return None  # repeated header: FastAPI decides
                key = v
        if ctype is None or ctype.split(b";", 1)[0].strip().lower() != JSON_CT:
            return None
        skey: str | None = None
        if key is not None:
            skey = key.decode("latin-1")
            if not 1 <= len(skey) <= IDEMPOTENCY_KEY_MAX:
                return None
        try:
            payload = TodoIn.model_validate(json.loads(body))
        except (ValueError, RecursionError):  # JSON, UTF-8 and pydantic errors are ValueErrors
            return None
        return payload, skey

    async def __call__(
        self, scope: Scope, method: str, body: bytes, receive: Receive, send: Send
    ) -> bool:
        """Answer the request and return True, or return False having sent nothing."""
        if method == "GET":
            if scope.get("root_path"):
                return False
            call = self.svc.list()
        else:
            parsed = self._parse_post(scope, body)
            if parsed is None:
                return False
            payload, key = parsed
            call = self.svc.create(payload, key)
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
