"""Fixtures: a REAL redis-server on a free loopback port, the app in-process over ASGI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from todo_api.app import create_public_app
from todo_api.config import Settings, parse_management
from todo_api.runtime import Runtime
from todo_api.store import IDS, LIST, SEQ_DIGITS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server not installed (apt-get install -y redis-server)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    srv = RedisServer(free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop, restart or fill without touching the others'."""
    srv = RedisServer(free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis_server.client()
    c.flushdb()
    yield c
    c.close()


@pytest.fixture
def make_settings(tmp_path: Path, redis_server: RedisServer) -> Callable[..., Settings]:
    """Settings with no cgroup (fallback mode) unless the test points at a fake tree."""

    def _make(**kw: Any) -> Settings:
        base = Settings(
            instance="1",
            management=parse_management(f"unix:{tmp_path}/m.sock"),
            redis_url=redis_server.url,
            cgroup_root=str(tmp_path / "no-cgroup"),
            proc_self_cgroup=str(tmp_path / "no-proc-self-cgroup"),
        )
        return replace(base, **kw)

    return _make


AppFactory = Callable[..., Any]


@pytest.fixture
async def make_client(
    make_settings: Callable[..., Settings], rdb: redis.Redis
) -> AsyncIterator[Callable[..., Any]]:
    runtimes: list[Runtime] = []
    clients: list[httpx.AsyncClient] = []

    async def _make(**kw: Any) -> tuple[httpx.AsyncClient, Runtime]:
        rt = Runtime(make_settings(**kw))
        runtimes.append(rt)
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_public_app(rt)), base_url="http://test"
        )
        clients.append(c)
        return c, rt

    yield _make
    for c in clients:
        await c.aclose()
    for rt in runtimes:
        await rt.aclose()


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    c, _ = await make_client()
    assert isinstance(c, httpx.AsyncClient)
    return c


def put_todo(pipe: redis.client.Pipeline, todo: dict[str, Any], seq: int) -> None:
    """A todo written straight into the store's layout (store.IDS, store.LIST)."""
    pipe.hset(IDS, todo["id"], seq)
    pipe.zadd(LIST, {f"{seq:0{SEQ_DIGITS}x}" + json.dumps(todo, separators=(",", ":")): seq})


def write_v2_tree(
    root: Path, current: int, limit: int | str, inactive: int = 0, rel: str = "system.slice/x"
) -> Path:
    """A fake cgroup v2 tree plus the /proc/self/cgroup that points into it."""
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    (d / "memory.current").write_text(f"{current}\n")
    (d / "memory.max").write_text(f"{limit}\n")
    (d / "memory.stat").write_text(f"anon {current}\nfile 0\ninactive_file {inactive}\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"0::/{rel}\n")
    return proc


def write_v1_tree(
    root: Path, usage: int, limit: int, inactive: int = 0, rel: str = "machine/x"
) -> Path:
    d = root / "memory" / rel
    d.mkdir(parents=True, exist_ok=True)
    (d / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (d / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (d / "memory.stat").write_text(
        f"cache 0\nrss {usage}\ninactive_file {inactive}\ntotal_inactive_file {inactive}\n"
    )
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"12:pids:/{rel}\n4:memory:/{rel}\n0::/{rel}\n")
    return proc


os.environ.setdefault("PYTHONUNBUFFERED", "1")
