"""The public contract as data: its paths, header limits and pydantic request/response models.

Imported by the service, the routes, the fast path and the middleware; imports nothing of ours
but ``errors`` (for the error body's model)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, model_validator

from .errors import ErrorBody

TODOS_PATH = "/api/todos"
TODO_PATH = TODOS_PATH + "/{todo_id}"
HEALTH_PATHS = ("/api/health", "/readyz")  # readiness: one handler, two paths
LIVEZ_PATH = "/livez"
METRICS_PATH = "/metrics"
# never shed, never counted as load: what the load balancer and Prometheus probe
UNSHED_PATHS = frozenset({*HEALTH_PATHS, LIVEZ_PATH, METRICS_PATH})

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX = 255  # characters; longer keys are a 422 (FastAPI's validation)
# NGINX sets it to its $request_id (overwriting any client value): the key of a keyless POST,
# so NGINX's own retry on the other instance replays instead of storing twice
REQUEST_ID_HEADER = "X-Request-ID"
LB_KEY_PREFIX = "lb:"  # a keyless POST's record: todos:idem:lb:<request id>

# GET /api/todos paging: no request reads more than LIST_MAX_LIMIT todos (bounded Redis time)
LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 500
Order = Literal["newest", "oldest"]
ORDERS: tuple[Order, ...] = ("newest", "oldest")
# a cursor is opaque to clients; it is the creation sequence of the last todo of a page
CURSOR_PATTERN = r"^[0-9]{1,15}$"
CURSOR_MAX = 15

# methods a route may have, in the order an Allow header lists them
METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allow_value(methods: frozenset[str]) -> str:
    """``Allow`` header for a path answering ``methods`` (HEAD with GET, OPTIONS always)."""
    full = set(methods) | {"OPTIONS"}
    if "GET" in full:
        full.add("HEAD")
    return ", ".join(m for m in METHOD_ORDER if m in full)


def is_json_body_route(method: str, path: str) -> bool:
    """POST /api/todos and PATCH /api/todos/{id}: the requests whose body is JSON."""
    if method == "POST":
        return path == TODOS_PATH
    if method == "PATCH":
        rest = path[len(TODOS_PATH) + 1 :] if path.startswith(TODOS_PATH + "/") else ""
        return bool(rest) and "/" not in rest
    return False


def is_json_media_type(value: bytes | None) -> bool:
    """application/json or application/*+json, any parameters (charset); no header = JSON
    (FastAPI parses a body without Content-Type as JSON)."""
    if value is None:
        return True
    mtype = value.split(b";", 1)[0].strip().lower()
    return mtype == b"application/json" or (
        mtype.startswith(b"application/") and mtype.endswith(b"+json")
    )


# stripped, then 1..500 characters: so it must hold a non-space character (the pattern tells
# the schema's readers, fuzzers included, what strip + min_length enforce)
Texto = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=r"\S"),
]


class TodoIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"texto": "Tarea durante failover"}]})
    texto: Texto


def _patch_schema(schema: dict[str, Any]) -> None:
    """What the validator enforces: each field optional but not null, at least one given."""
    props = schema["properties"]
    for name in ("texto", "completada"):
        options = props[name].pop("anyOf")
        props[name].update(next(o for o in options if o.get("type") != "null"))
        props[name].pop("default", None)
    schema["anyOf"] = [{"required": ["texto"]}, {"required": ["completada"]}]


class TodoPatch(BaseModel):
    model_config = ConfigDict(json_schema_extra=_patch_schema)
    texto: Texto | None = None
    completada: StrictBool | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> TodoPatch:
        given = self.model_fields_set & {"texto", "completada"}
        if any(getattr(self, name) is None for name in given):
            raise ValueError("'texto' and 'completada' may be left out, not null")
        if not given:
            raise ValueError("give at least one of 'texto' or 'completada'")
        return self


class Todo(BaseModel):
    id: str
    texto: str
    completada: bool
    createdAt: datetime = Field(description="ISO 8601, UTC")
    instance: str = Field(description="instance that created the todo")


class Health(BaseModel):
    status: Literal["OK", "DEGRADED", "UNHEALTHY"] = Field(
        description="OK; DEGRADED: Redis unreachable (still 200: every instance shares Redis, "
        "the load balancer must not eject them all); UNHEALTHY: memory over the threshold (503)"
    )
    instance: str
    rssMB: float
    usedMB: float
    limitMB: float
    memoryPercent: float
    thresholdPercent: int
    memorySource: Literal["cgroup-v2", "cgroup-v1", "fallback"]
    redis: Literal["ok", "down"]
    reasons: list[str] | None = None


# OpenAPI ``responses=`` fragments of the routes
Responses = dict[int | str, dict[str, Any]]

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def _err(description: str, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"model": ErrorBody, "description": description}
    if retry_after:
        out["headers"] = _RETRY_AFTER
    return out


# every todo operation: shed (429) and storage unreachable (503); never 500 by design
E_COMMON: Responses = {
    422: _err("validation failed (parameters or body)"),
    429: _err("instance overloaded (memory over its threshold): retry on another", True),
    503: _err("storage unavailable (Redis unreachable or timed out)", True),
}
E_BODY: Responses = {
    400: _err("invalid JSON; or more than one Idempotency-Key header"),
    413: _err("body over TODO_API_MAX_BODY_BYTES (16 KiB)"),
    415: _err("Content-Type is not application/json (or application/*+json)"),
    507: _err("storage full (Redis maxmemory reached): nothing was written", True),
}
E404: Responses = {404: _err("unknown id")}
HEALTH_503: Responses = {503: {"model": Health, "description": "memory over the threshold"}}

LIST_HEADERS: dict[str, Any] = {
    "X-Total-Count": {
        "description": "number of todos stored (all pages)",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    "Link": {
        "description": 'next page, relative: </api/todos?limit=L&order=O&cursor=C>; rel="next"; '
        "absent on the last page",
        "schema": {"type": "string"},
    },
}
