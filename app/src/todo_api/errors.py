"""One JSON error shape everywhere: {"error": "...", "detail": ...}; never HTML or tracebacks."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .logs import get_logger
from .metrics import Metrics


class ErrorBody(BaseModel):
    error: str
    detail: Any = None


def error_response(
    status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def error_bytes(error: str, detail: Any = None) -> bytes:
    return json.dumps({"error": error, "detail": detail}, separators=(",", ":")).encode()


class _MarksRedisDown(Protocol):
    def mark_redis_down(self) -> None: ...


def redis_error_response(
    exc: Exception, metrics: Metrics | None, health: _MarksRedisDown | None, retry_after: int
) -> Response:
    """503 for a Redis failure (also used by the ASGI fast path, so both answer alike)."""
    if metrics is not None:
        metrics.redis_errors.inc()
    if health is not None:
        health.mark_redis_down()
    get_logger().error("redis error", extra={"err": f"{type(exc).__name__}: {exc}"})
    return error_response(
        503,
        "storage unavailable",
        f"{type(exc).__name__}: {exc}",
        {"Retry-After": str(retry_after)},
    )


def internal_error_response(exc: BaseException) -> Response:
    get_logger().error("unhandled error", exc_info=exc)
    return error_response(500, "internal error", type(exc).__name__)


def _clean(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append(
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
        )
    return out


def install_error_handlers(
    app: FastAPI, metrics: Metrics | None = None, retry_after: int = 5
) -> None:
    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid JSON", _clean(errors))
        return error_response(422, "validation failed", _clean(errors))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        try:
            phrase = HTTPStatus(exc.status_code).phrase.lower()
        except ValueError:
            phrase = "error"
        detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else None
        if isinstance(detail, dict) and "error" in detail:
            return JSONResponse(detail, status_code=exc.status_code, headers=exc.headers)
        return error_response(exc.status_code, phrase, detail, dict(exc.headers or {}))

    async def on_redis(request: Request, exc: Exception) -> Response:
        return redis_error_response(
            exc, metrics, getattr(request.app.state, "health", None), retry_after
        )

    async def on_any(request: Request, exc: Exception) -> Response:
        return internal_error_response(exc)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RedisError, on_redis)
    app.add_exception_handler(Exception, on_any)
