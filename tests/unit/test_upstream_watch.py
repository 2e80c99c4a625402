"""The upstream watcher (roles/nginx_lb/files/halab-upstream-watch.py): what one round sees of
an instance (real sockets on loopback), when an instance is shut out, that NGINX always keeps
one, and the nftables transaction it writes (checked by nft itself where it can run)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import pytest

from tests.support.run import REPO

SCRIPT = REPO / "roles" / "nginx_lb" / "files" / "halab-upstream-watch.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("halab_upstream_watch", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


WATCH = load()
State = WATCH.State
OPTS = WATCH.Options(interval=0.2, timeout=0.5, fall=2, health_path="/livez", health_every=5, health_timeout=0.3, uid=33)


class Livez(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/livez" else 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Livez)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stuck() -> Iterator[int]:
    """A socket that listens but never accepts: the kernel completes the connection, nothing answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peer(port: int) -> Any:
    return WATCH.parse_peer(f"127.0.0.1:{port}")


def test_one_round_sees_answers_hung_and_refused(answering: int, stuck: int) -> None:
    assert WATCH.check(peer(answering), OPTS, ask_health=True) is State.ANSWERS
    assert WATCH.check(peer(stuck), OPTS, ask_health=False) is State.ANSWERS  # accepted by the kernel
    assert WATCH.check(peer(stuck), OPTS, ask_health=True) is State.HUNG
    assert WATCH.check(peer(closed_port()), OPTS, ask_health=True) is State.REFUSED


def test_a_peer_is_silent_only_after_fall_rounds_and_answers_at_once() -> None:
    p = WATCH.parse_peer("10.0.0.1:18000")
    WATCH.observe(p, State.UNREACHABLE, OPTS)
    assert p.state is State.ANSWERS and not WATCH.shut_out([p, WATCH.parse_peer("10.0.0.2:18000")])
    WATCH.observe(p, State.HUNG, OPTS)  # two silent rounds, of either kind
    assert p.state is State.HUNG and p.silent
    WATCH.observe(p, State.ANSWERS, OPTS)
    assert p.state is State.ANSWERS and p.misses == 0


def peers_in(*states: Any) -> list[Any]:
    peers = [WATCH.parse_peer(f"10.0.0.{n}:18000") for n in range(1, len(states) + 1)]
    for p, s in zip(peers, states, strict=True):
        p.state = s
    return peers


@pytest.mark.parametrize(
    ("states", "shut"),
    [
        ((State.ANSWERS, State.UNREACHABLE), [1]),
        ((State.HUNG, State.ANSWERS), [0]),
        ((State.REFUSED, State.UNREACHABLE), [1]),  # a refused one is NGINX's own; it stays
        ((State.HUNG, State.UNREACHABLE), [1]),  # none answers: the best one stays
        ((State.UNREACHABLE, State.UNREACHABLE), []),  # never every instance
        ((State.ANSWERS, State.ANSWERS), []),
    ],
)
def test_shut_out_never_takes_every_instance(states: tuple[Any, ...], shut: list[int]) -> None:
    peers = peers_in(*states)
    assert WATCH.shut_out(peers) == [peers[i] for i in shut]


def test_the_ruleset_resets_only_nginx_workers_packets_and_empties_to_nothing() -> None:
    peers = peers_in(State.UNREACHABLE, State.ANSWERS)
    text = WATCH.ruleset(peers[:1], 33)
    assert "meta skuid 33 ip daddr 10.0.0.1 tcp dport 18000 counter reject with tcp reset" in text
    assert "10.0.0.2" not in text
    assert text.index("flush chain") < text.index("add rule")  # rewritten whole, never appended twice
    assert WATCH.ruleset([], 33).splitlines()[-1] == f"delete table {WATCH.TABLE}"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="nft --check needs root and nft")
@pytest.mark.parametrize("shut", [0, 1, 2])
def test_nft_accepts_the_ruleset(shut: int) -> None:
    peers = peers_in(State.UNREACHABLE, State.UNREACHABLE)
    peers[1] = WATCH.parse_peer("fd00::2:18000")
    text = WATCH.ruleset(peers[:shut], 33)
    result = subprocess.run(["nft", "--check", "-f", "-"], input=text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr + text
