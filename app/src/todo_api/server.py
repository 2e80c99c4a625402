"""Entry point: public + management uvicorn servers in one asyncio loop, sd_notify, signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import systemd
from .app import create_public_app
from .config import ConfigError, Settings
from .logs import setup_logging
from .management import create_management_app
from .runtime import Runtime


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to us (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


# The request head (request line + headers) a listener accepts. uvicorn's own limit,
# h11_max_incomplete_event_size, is h11's only; with httptools (used for speed) nothing bounds
# the head at all (a 1 MiB header was accepted), hence the protocol below. NGINX sends at most
# its large_client_header_buffers (4 x 8 KiB lines) plus a few headers of its own.
MAX_HEAD_BYTES = 16 * 1024
# Idle keep-alive connections are kept longer than NGINX keeps its idle upstream connections
# (nginx_lb's keepalive_timeout, 4 s): the upstream side must close first, or NGINX may send a
# request on a connection uvicorn is closing and see a reset.
KEEP_ALIVE_SECONDS = 10
# limit_concurrency is left unset on purpose: past it uvicorn answers a plain-text 503, the
# status the load balancer reads as "storage unavailable" (not retried, not counted), for what
# is the instance's own overload. That is the memory shedding's job (429); connections are
# bounded by the unit's LimitNOFILE and NGINX's limit_conn.

_HEAD_TOO_LARGE_BODY = json.dumps(
    {"error": "request header fields too large", "detail": {"maxBytes": MAX_HEAD_BYTES}},
    separators=(",", ":"),
).encode()
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s"
    % (len(_HEAD_TOO_LARGE_BODY), _HEAD_TOO_LARGE_BODY)
)


class _HeadTooLarge(Exception):
    pass


class _CoalescingTransport:
    """A connection's transport whose writes of one loop iteration go out as one: uvicorn
    writes a response's head and its body separately, two system calls where one will do
    (under load, about a tenth of the instance's CPU was these writes). Written at the end
    of the iteration, or before a close; everything else is the real transport's."""

    def __init__(self, real: asyncio.Transport) -> None:
        self._real = real
        self._out: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(bytes(data))

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            if not self._real.is_closing():
                self._real.write(data)

    def close(self) -> None:
        self._flush()
        self._real.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head limit (431, JSON, connection closed),
    writing through a _CoalescingTransport.

    Counted twice: the bytes of a head still incomplete after a read (so one endless header
    is refused after MAX_HEAD_BYTES, not buffered), and the URL + headers of a complete one."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(
            cast(asyncio.Transport, _CoalescingTransport(cast(asyncio.Transport, transport)))
        )

    _head_bytes = 0  # URL + headers of the current request
    _raw_head = 0  # bytes read while the head was incomplete
    _in_head = False
    _too_large = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._too_large = True
            raise _HeadTooLarge  # httptools turns it into a parser error: send_400_response

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head = 0
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self._too_large:
            self._raw_head += len(data)
            if self._raw_head > MAX_HEAD_BYTES:
                self._too_large = True
                self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        if not self.transport.is_closing():
            self.transport.write(_HEAD_TOO_LARGE)
            self.transport.close()


def _bind_unix(path: str) -> socket.socket:
    p = Path(path)
    p.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    if p.is_socket():
        p.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    return sock


def _uvicorn_config(app: object, s: Settings, **kw: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        access_log=False,
        log_config=None,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=s.graceful_timeout,
        http=BoundedHttpToolsProtocol,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,  # if it is ever run with http="h11"
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # nothing reads the client's address or scheme, and uvicorn trusts X-Forwarded-* from
        # loopback only: NGINX is another node. Its middleware cost ~2 % of a request's CPU.
        proxy_headers=False,
        **kw,  # type: ignore[arg-type]
    )


# The cyclic collector's generation-0 threshold: 10x Python's 700. See tune_gc.
GC_GEN0_THRESHOLD = 7000


def tune_gc() -> None:
    """Once started (apps built, listeners up, Redis answering), before READY=1: collect the
    start-up garbage, freeze what is left, and collect the youngest generation less often.

    ``gc.freeze()`` moves every object then alive (modules, the apps, FastAPI's and pydantic's
    tables: ~72 000 tracked objects, alive as long as the process) into the permanent
    generation, which no collection traverses. Before, each full collection walked them all:
    100-140 ms with the event loop stopped, 3 to 6 times in 10 s of POST/GET load, 13-21 % of the
    CPU in the collector (gc.callbacks, measured). Frozen, one takes ~1 ms.

    Generation 0 is collected when the container objects allocated minus those freed pass the
    threshold. Under load, the ~32 requests in flight alone keep that many alive, so at 700
    it ran ~150 times a second to find little garbage (per-request objects die by reference
    counting); at 7000 it runs only when real cyclic garbage accumulates (once in 10 s of load,
    GC time ~0). Garbage in cycles waits at most ~7000 objects longer: a few MB at worst."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def _wait_ready(
    rt: Runtime, servers: list[_Server], notify: Callable[[str], bool]
) -> None:
    while not all(srv.started for srv in servers):
        if any(srv.should_exit for srv in servers):
            return
        await asyncio.sleep(0.05)
    delay, attempt = 0.2, 0
    while True:
        attempt += 1
        try:
            await asyncio.wait_for(rt.store.ping(), 1.0)
            break
        except Exception as exc:
            msg = f"waiting for Redis (attempt {attempt}): {type(exc).__name__}: {exc}"
            notify(f"STATUS={msg}")
            rt.log.warning("redis not reachable yet", extra={"attempt": attempt, "err": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    await _migrate(rt)
    tune_gc()
    notify("READY=1\nSTATUS=serving")
    rt.log.info(
        "ready",
        extra={
            "public": f"{rt.settings.host}:{rt.settings.port}",
            "management": rt.settings.management.describe(),
        },
    )


async def _migrate(rt: Runtime) -> None:
    """Todos of the earlier storage layout into the current one (store.TodoStore.migrate).
    A failure is logged, not fatal: the instance serves what is already moved, and the
    next start tries again."""
    try:
        moved = await rt.store.migrate()
    except Exception as exc:
        err = f"{type(exc).__name__}: {exc}"
        rt.log.warning("storage layout migration failed", extra={"err": err})
        return
    if moved:
        rt.log.info("storage layout migrated", extra={"todos": moved})


async def _watchdog(interval: float, notify: Callable[[str], bool]) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def serve(settings: Settings) -> None:
    log = setup_logging(settings.instance)
    rt = Runtime(settings, log)
    public = _Server(
        _uvicorn_config(create_public_app(rt), settings, host=settings.host, port=settings.port)
    )
    mgmt_sockets: list[socket.socket] | None = None
    m = settings.management
    if m.uds is not None:
        mgmt_sockets = [_bind_unix(m.uds)]
        mgmt = _Server(_uvicorn_config(create_management_app(rt), settings))
    else:
        mgmt = _Server(
            _uvicorn_config(create_management_app(rt), settings, host=m.host, port=m.port)
        )
    servers = [public, mgmt]

    def notify(state: str) -> bool:
        return systemd.notify(state)

    def on_signal(sig: signal.Signals) -> None:
        if any(srv.should_exit for srv in servers):
            for srv in servers:
                srv.force_exit = True
            return
        log.info("signal received: graceful shutdown", extra={"signal": sig.name})
        notify("STOPPING=1")
        for srv in servers:
            srv.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    tasks = [asyncio.create_task(_wait_ready(rt, servers, notify))]
    interval = systemd.watchdog_interval()
    if interval:
        tasks.append(asyncio.create_task(_watchdog(interval, notify)))
    notify("STATUS=starting listeners")
    try:
        await asyncio.gather(public.serve(), mgmt.serve(sockets=mgmt_sockets))
    finally:
        notify("STOPPING=1")
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await rt.aclose()
        if m.uds is not None:
            with contextlib.suppress(OSError):
                os.unlink(m.uds)
        log.info("stopped")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop


def main() -> None:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(
            json.dumps({"level": 60, "instance": os.environ.get("TODO_API_INSTANCE", ""),
                        "msg": f"configuration error: {exc}"}),
            flush=True,
        )
        print(f"todo-api: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(settings))


if __name__ == "__main__":
    main()
