"""Entry point: public + management uvicorn servers in one asyncio loop, sd_notify, signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Generator
from pathlib import Path

import uvicorn

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
        **kw,  # type: ignore[arg-type]
    )


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
    notify("READY=1\nSTATUS=serving")
    rt.log.info(
        "ready",
        extra={
            "public": f"{rt.settings.host}:{rt.settings.port}",
            "management": rt.settings.management.describe(),
        },
    )


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
