"""Pure ASGI middleware for the public listener: X-Instance, load shedding, methods (OPTIONS,
HEAD, 405 with the full Allow), media type (415), repeated Idempotency-Key (400), body limit,
request log line and metrics. All of it runs before the body is read or parsed, and answers
alike for the fast path and FastAPI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client.metrics import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_bytes
from .models import (
    IDEMPOTENCY_KEY_HEADER,
    REQUEST_ID_HEADER,
    UNSHED_PATHS,
    allow_value,
    is_json_body_route,
    is_json_media_type,
)
from .runtime import Runtime

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
IDEMPOTENCY_KEY = IDEMPOTENCY_KEY_HEADER.lower().encode()
REQUEST_ID = REQUEST_ID_HEADER.lower().encode()


def request_id_of(scope: Scope) -> str | None:
    """The load balancer's id of this request (X-Request-ID), as its access log has it."""
    for k, v in scope["headers"]:
        if k == REQUEST_ID:
            return bytes(v).decode("latin-1")[:64]
    return None

# path -> the methods its routes answer (GET implies HEAD), None for an unknown path
AllowedMethods = Callable[[str], frozenset[str] | None]


class FastHandler(Protocol):
    """What the middleware needs of a fast path (``fastpath.FastPath``, ``fastpath.HealthFast``)."""

    path: str  # the one path it answers (the middleware looks handlers up by path)
    route: str  # route label of the requests it answers

    def handles(self, method: str, path: str) -> bool: ...

    async def __call__(
        self, scope: Scope, method: str, body: bytes, receive: Receive, send: Send
    ) -> bool:
        """Answer and return True, or return False having sent nothing."""
        ...


class PublicMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        rt: Runtime,
        fast: Iterable[FastHandler] = (),
        allowed: AllowedMethods | None = None,
    ) -> None:
        self.app = app
        self.rt = rt
        # path -> its fast handler: one dict lookup per request
        self.fast: dict[str, FastHandler] = {h.path: h for h in fast}
        # without it (no route table) Starlette's routing answers methods as it does
        self.allowed = allowed
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

        out: Send = send_wrapper  # HEAD swaps in a body-dropping sender

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
                    # 429, not 503: NGINX retries it on another instance (the instance's own
                    # sickness), while 503 stays the storage's, which NGINX must not count
                    await self._reply(
                        out, 429, body, [(b"retry-after", self.retry_after)]
                    )
                    return
            methods = self.allowed(path) if self.allowed is not None else None
            if methods is not None and method not in methods:
                allow = (b"allow", allow_value(methods).encode())
                if method == "OPTIONS":
                    route_label = "options"
                    await out(
                        {"type": "http.response.start", "status": 204, "headers": [allow]}
                    )
                    await out({"type": "http.response.body", "body": b""})
                    return
                if method == "HEAD" and "GET" in methods:
                    # a GET whose body is dropped: same status and headers (Content-Length too)
                    scope = {**scope, "method": "GET"}
                    inner = out

                    async def send_head(message: Message) -> None:
                        if message["type"] == "http.response.body":
                            if message.get("more_body", False):
                                return
                            message = {"type": "http.response.body", "body": b""}
                        await inner(message)

                    out = send_head
                else:
                    route_label = "method_not_allowed"
                    await self._reply(
                        out, 405, error_bytes("method not allowed"), [allow]
                    )
                    return
            if is_json_body_route(method, path):
                ctype: bytes | None = None
                keys = 0
                for k, v in scope["headers"]:
                    if k == b"content-type" and ctype is None:
                        ctype = v
                    elif k == IDEMPOTENCY_KEY:
                        keys += 1
                if not is_json_media_type(ctype):
                    # before the body is read: what it is, we would not parse
                    route_label = "unsupported_media_type"
                    body = error_bytes("unsupported media type", {"expected": "application/json"})
                    await self._reply(out, 415, body)
                    return
                if keys > 1:
                    # which one would the client mean? never silently pick one
                    route_label = "bad_request"
                    body = error_bytes("more than one Idempotency-Key header")
                    await self._reply(out, 400, body)
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
                    await self._reply(out, 413, body, [(b"connection", b"close")])
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
            fast = self.fast.get(path)
            fmethod: str = scope["method"]  # HEAD is answered as GET
            if (
                fast is not None
                and fast.handles(fmethod, path)
                and await fast(scope, fmethod, body, downstream, out)
            ):
                route_label = fast.route
                return
            await self.app(scope, downstream, out)
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
            # one request in NGINX's access log and here: the same id (X-Request-ID)
            rt.log.request(
                method, path, status, round(elapsed * 1000, 2), request_id_of(scope)
            )
