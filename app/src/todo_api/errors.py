"""One JSON error shape everywhere: {"error": "...", "detail": ...}; never HTML or tracebacks."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
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


# Redis replies that mean "not now" rather than "broken": answered like an unreachable Redis
# (503), but Redis answered, so health does not call it down
_TRANSIENT = ("BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN")


def redis_error_response(
    exc: Exception, metrics: Metrics | None, health: _MarksRedisDown | None, retry_after: int
) -> Response:
    """The answer to a Redis failure (also used by the ASGI fast path, so both answer alike).

    Storage trouble is not the instance's own: 503 / 507 here are statuses NGINX neither
    retries nor counts against the instance. The body never carries the exception text (it
    names Redis' address, script SHAs): that goes to the log."""
    if metrics is not None:
        metrics.redis_errors.inc()
    text = f"{type(exc).__name__}: {exc}"
    retry = {"Retry-After": str(retry_after)}
    log = get_logger()
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError):
        if health is not None:  # only an unreachable Redis is "down" in /api/health
            health.mark_redis_down()
        log.error("redis unreachable", extra={"err": text})
        return error_response(503, "storage unavailable", None, retry)
    message = str(exc)
    if isinstance(exc, OutOfMemoryError) or message.startswith("OOM"):
        log.error("redis full (maxmemory)", extra={"err": text})
        return error_response(507, "storage full", None, retry)
    if isinstance(exc, ResponseError) and message.startswith(_TRANSIENT):
        log.error("redis busy", extra={"err": text})
        return error_response(503, "storage unavailable", None, retry)
    log.error("redis error", extra={"err": text})
    return error_response(500, "internal error", None)


def internal_error_response(exc: BaseException) -> Response:
    get_logger().error("unhandled error", exc_info=exc)
    return error_response(500, "internal error", None)


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
