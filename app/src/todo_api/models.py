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

Texto = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class TodoIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"texto": "Tarea durante failover"}]})
    texto: Texto


class TodoPatch(BaseModel):
    texto: Texto | None = None
    completada: StrictBool | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> TodoPatch:
        if self.texto is None and self.completada is None:
            raise ValueError("give at least one of 'texto' or 'completada'")
        return self


class Todo(BaseModel):
    id: str
    texto: str
    completada: bool
    createdAt: datetime = Field(description="ISO 8601, UTC")
    instance: str = Field(description="instance that created the todo")


class Health(BaseModel):
    status: Literal["OK", "UNHEALTHY"]
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

E503: Responses = {
    503: {"model": ErrorBody, "description": "overloaded (shed) or storage unavailable"}
}
E_BODY: Responses = {
    400: {"model": ErrorBody, "description": "invalid JSON"},
    413: {"model": ErrorBody, "description": "body over 16 KiB"},
    422: {"model": ErrorBody, "description": "validation failed"},
}
E404: Responses = {404: {"model": ErrorBody, "description": "unknown id"}}
E409: Responses = {
    409: {"model": ErrorBody, "description": "same Idempotency-Key still in flight"}
}
HEALTH_503: Responses = {503: {"model": Health, "description": "not ready"}}
