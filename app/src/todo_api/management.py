"""Management plane: a second listener (unix socket or loopback TCP) in the same process.

The seed's lesson: a node the load balancer isolates cannot be repaired through the load
balancer, so stress/clear live here and are 404 on the public port."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from typing import Any

from fastapi import FastAPI, Query

from . import __version__
from .cgroup import MB
from .errors import install_error_handlers
from .runtime import Runtime

PAGE = 4096


def _allocate(nbytes: int) -> bytearray:
    buf = bytearray(nbytes)  # calloc'd: zero pages are not resident yet...
    buf[::PAGE] = b"\x01" * len(range(0, nbytes, PAGE))  # ...so write to every page
    return buf


def malloc_trim() -> bool:
    """Give freed heap back to the kernel (glibc); False where unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def create_management_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="halab todo API management", version=__version__)
    install_error_handlers(app, rt.metrics)
    s = rt.settings

    def stress_state() -> dict[str, Any]:
        return {"chunks": len(rt.hog), "allocatedMB": sum(len(b) for b in rt.hog) // MB}

    async def health_now() -> dict[str, Any]:
        rt.monitor.invalidate()
        _, body = await rt.health.check()
        return body

    @app.post("/stress")
    async def stress(
        mb: int | None = Query(default=None, ge=1, le=65536, description="target MB held"),
    ) -> dict[str, Any]:
        target = (mb or s.stress_target_mb) * MB
        chunk = s.stress_chunk_mb * MB
        added = 0
        async with rt.stress_lock:
            held = sum(len(b) for b in rt.hog)
            while held < target:
                n = min(chunk, target - held)
                rt.hog.append(await asyncio.to_thread(_allocate, n))
                held += n
                added += n
                # read memory after each chunk: the threshold's crossing is logged and load
                # shed here, not at the next cached reading (up to 0.2 s on), which a stress
                # past MemoryMax did not live to see now and then: the kernel killed it first
                rt.monitor.invalidate()
                rt.health.memory()
        rt.log.warning(
            "stress: memory allocated",
            extra={"addedMB": added // MB, "heldMB": held // MB},
        )
        return {"addedMB": added // MB, **stress_state(), "health": await health_now()}

    @app.post("/clear")
    async def clear() -> dict[str, Any]:
        async with rt.stress_lock:
            freed = sum(len(b) for b in rt.hog)
            chunks = len(rt.hog)
            rt.hog.clear()
            gc.collect()
            trimmed = malloc_trim()
        rt.log.info("stress cleared", extra={"freedMB": freed // MB, "chunks": chunks})
        return {
            "freedMB": freed // MB,
            "freedChunks": chunks,
            "mallocTrim": trimmed,
            **stress_state(),
            "health": await health_now(),
        }

    @app.get("/status")
    async def status() -> dict[str, Any]:
        return {
            "instance": s.instance,
            "stress": stress_state(),
            "health": await health_now(),
        }

    return app
