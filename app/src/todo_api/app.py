"""App factory of the public listener: FastAPI's app (the router, the error handlers) inside the
middleware (with the fast path in it), all over one ``Runtime``. The management app is
``management.py``."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from . import __version__
from .errors import install_error_handlers
from .fastpath import FastPath, HealthFast
from .middleware import AllowedMethods, FastHandler, PublicMiddleware
from .models import HEALTH_PATHS
from .routes import build_router
from .runtime import Runtime
from .service import TodoService


def allowed_methods(routes: Iterable[BaseRoute]) -> AllowedMethods:
    """path -> every method of every route on it. Starlette answers a wrong method with the
    Allow of the first route that matched the path only (GET of GET /api/todos, not POST),
    and FastAPI routes have no HEAD: the middleware answers OPTIONS, HEAD and 405 from this."""
    table: dict[str, tuple[re.Pattern[str], set[str]]] = {}
    for route in routes:
        if isinstance(route, Route) and route.methods:
            _, methods = table.setdefault(route.path, (route.path_regex, set()))
            methods.update(route.methods)
    entries = [(regex, frozenset(methods)) for regex, methods in table.values()]

    def match(path: str) -> frozenset[str] | None:
        for regex, methods in entries:
            if regex.match(path):
                return methods
        return None

    # the answer for each fixed path (no parameter: /api/health, /api/todos...), computed by
    # the same first-match loop once: one dict lookup for them on every request
    fixed = {path: match(path) for path in table if "{" not in path}

    def allowed(path: str) -> frozenset[str] | None:
        methods = fixed.get(path)
        return methods if methods is not None else match(path)

    return allowed


# FastAPI's native OpenTelemetry, off: no OpenTelemetry SDK is installed (requirements.lock has
# only opentelemetry-api), so it never recorded anything here, but it asked the global tracer,
# meter and logger providers whether one was configured on every request (3-5 % of the CPU
# under load, py-spy). The instance's telemetry is its Prometheus metrics and JSON log lines.
NO_OTEL: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters  # FastAPI >= 0.16x
    else {}
)


def create_public_app(rt: Runtime) -> PublicMiddleware:
    app = FastAPI(
        **NO_OTEL,
        title="halab todo API",
        version=__version__,
        description="Public listener. Errors are JSON {error, detail}; every response carries "
        "X-Instance. While memory is over the threshold every request except /api/health, "
        "/readyz, /livez and /metrics is shed with 429 + Retry-After (retry on another "
        "instance). Storage trouble is 503 storage unavailable / 507 storage full, with "
        "Retry-After. OPTIONS answers 204 with Allow; HEAD works wherever GET does.",
    )
    app.state.health = rt.health
    app.state.runtime = rt
    install_error_handlers(app, rt.metrics, rt.settings.retry_after_seconds)
    svc = TodoService(rt)
    router = build_router(rt, svc)
    app.include_router(router)  # no prefix: the router's paths are the app's
    # app.routes holds the included router as one opaque entry (FastAPI >= 0.16x): list both
    allowed = allowed_methods([*app.routes, *router.routes])
    # the hot routes without FastAPI (readiness is polled by NGINX, Prometheus and the page)
    fast: list[FastHandler] = [FastPath(rt, svc), *(HealthFast(rt, p) for p in HEALTH_PATHS)]
    # Around FastAPI, not inside its stack: what the fast path answers skips FastAPI's and
    # Starlette's outer layers (error, telemetry and body-limit middleware: ~5 % of a POST's
    # CPU, py-spy). What reaches FastAPI still goes through all of them.
    return PublicMiddleware(app, rt=rt, fast=fast, allowed=allowed)
