"""App factory of the public listener: the router, the error handlers and the middleware (with
the fast path in it), all over one ``Runtime``. The management app is ``management.py``."""

from __future__ import annotations

import re
from collections.abc import Iterable

from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from . import __version__
from .errors import install_error_handlers
from .fastpath import FastPath
from .middleware import AllowedMethods, PublicMiddleware
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

    def allowed(path: str) -> frozenset[str] | None:
        for regex, methods in entries:
            if regex.match(path):
                return methods
        return None

    return allowed


def create_public_app(rt: Runtime) -> FastAPI:
    app = FastAPI(
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
    app.add_middleware(PublicMiddleware, rt=rt, fast=FastPath(rt, svc), allowed=allowed)
    return app
