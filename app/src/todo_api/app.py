"""App factory of the public listener: the router, the error handlers and the middleware (with
the fast path in it), all over one ``Runtime``. The management app is ``management.py``."""

from __future__ import annotations

from fastapi import FastAPI

from . import __version__
from .errors import install_error_handlers
from .fastpath import FastPath
from .middleware import PublicMiddleware
from .routes import build_router
from .runtime import Runtime
from .service import TodoService


def create_public_app(rt: Runtime) -> FastAPI:
    app = FastAPI(
        title="halab todo API",
        version=__version__,
        description="Public listener. Errors are JSON {error, detail}; every response carries "
        "X-Instance. While memory is over the threshold every request except /api/health, "
        "/readyz, /livez and /metrics is shed with 503 + Retry-After.",
    )
    app.state.health = rt.health
    app.state.runtime = rt
    install_error_handlers(app, rt.metrics, rt.settings.retry_after_seconds)
    svc = TodoService(rt)
    app.include_router(build_router(rt, svc))
    app.add_middleware(PublicMiddleware, rt=rt, fast=FastPath(rt, svc))
    return app
