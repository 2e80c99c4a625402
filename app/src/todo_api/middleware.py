"""Pure ASGI middleware for the public listener: X-Instance, load shedding, body limit,
request log line and metrics. Shedding and the size limit run before the body is read/parsed."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from prometheus_client.metrics import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_bytes
from .models import UNSHED_PATHS
from .runtime import Runtime

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class FastHandler(Protocol):
    """What the middleware needs of a fast path (``fastpath.FastPath`` is one)."""

    route: str  # route label of the requests it answers

    def handles(self, method: str, path: str) -> bool: ...

    async def __call__(
        self, scope: Scope, method: str, body: bytes, receive: Receive, send: Send
    ) -> bool:
        """Answer and return True, or return False having sent nothing."""
        ...


class PublicMiddleware:
    def __init__(self, app: ASGIApp, rt: Runtime, fast: FastHandler | None = None) -> None:
        self.app = app
        self.rt = rt
        self.fast = fast
        # (method, route, status) -> metric children: .labels() is a lock + dict lookup each
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self.instance_header = (b"x-instance", rt.settings.instance.encode())
        self.max_body = rt.settings.max_body_bytes
        self.retry_after = str(rt.settings.retry_after_seconds).encode()

    async def _reply(
        self, send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        status = 500
        route_label = "unmatched"
        rt = self.rt

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), self.instance_header]
                message = {**message, "headers": headers}
            await send(message)

        try:
            if path not in UNSHED_PATHS:
                over, reading = rt.health.memory()
                if over:
                    rt.metrics.shed.inc()
                    route_label = "shed"
                    body = error_bytes(
                        "instance overloaded",
                        {
                            "reason": "memory over threshold",
                            "memoryPercent": round(reading.percent, 1),
                            "thresholdPercent": rt.monitor.threshold_percent,
                        },
                    )
                    await self._reply(
                        send_wrapper, 503, body, [(b"retry-after", self.retry_after)]
                    )
                    return
            if method in BODY_METHODS:
                too_big = False
                for k, v in scope["headers"]:
                    if k == b"content-length":
                        try:
                            too_big = int(v) > self.max_body
                        except ValueError:
                            too_big = True
                chunks: list[bytes] = []
                size = 0
                if not too_big:
                    more = True
                    while more:
                        msg = await receive()
                        if msg["type"] != "http.request":
                            return  # client went away
                        chunk = msg.get("body", b"")
                        size += len(chunk)
                        if size > self.max_body:
                            too_big = True
                            break
                        chunks.append(chunk)
                        more = bool(msg.get("more_body", False))
                if too_big:
                    route_label = "too_large"
                    body = error_bytes(
                        "request body too large", {"maxBytes": self.max_body}
                    )
                    await self._reply(send_wrapper, 413, body, [(b"connection", b"close")])
                    return
                body = b"".join(chunks)
                buffered: Message = {"type": "http.request", "body": body, "more_body": False}
                sent = False

                async def replay() -> Message:
                    nonlocal sent
                    if not sent:
                        sent = True
                        return buffered
                    return await receive()

                downstream: Receive = replay
            else:
                body, downstream = b"", receive
            fast = self.fast
            if (
                fast is not None
                and fast.handles(method, path)
                and await fast(scope, method, body, downstream, send_wrapper)
            ):
                route_label = fast.route
                return
            await self.app(scope, downstream, send_wrapper)
            route = scope.get("route")
            if route is not None and hasattr(route, "path"):
                route_label = str(route.path)
        finally:
            elapsed = time.perf_counter() - start
            key = (method, route_label, str(status))
            children = self._children.get(key)
            if children is None:
                children = (rt.metrics.requests.labels(*key), rt.metrics.latency.labels(*key))
                self._children[key] = children
            children[0].inc()
            children[1].observe(elapsed)
            log = rt.log
            if log.isEnabledFor(logging.INFO):
                # what log.info() does, minus findCaller(): the JSON line has no file/line
                log.handle(
                    log.makeRecord(
                        log.name,
                        logging.INFO,
                        "(unknown file)",
                        0,
                        "request completed",
                        (),
                        None,
                        extra={
                            "method": method,
                            "path": path,
                            "status": status,
                            "durationMs": round(elapsed * 1000, 2),
                        },
                    )
                )
