"""The public edge as a stranger meets it: JSON for every error NGINX answers itself, no Host
reflection, the page's security headers, per-client limits. Aimed only at the lab's own
load balancer; every loop is bounded in count and time."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx
import pytest
import testinfra

from tests.support.model import INSTANCE_NODE, LOADBALANCER_GROUP, PUBLIC_URL, TOPO
from tests.support.net import http
from tests.support.wait import wait_until

# Where the load balancer answers on its own: what it must say, and its status.
NGINX_ERRORS = [
    ("GET", "/no-such-page", {}, b"", 404),
    ("DELETE", "/", {}, b"", 405),
    ("POST", "/api/stress", {}, b"", 404),
    ("GET", "/api/" + "a" * 9000, {}, b"", 414),
    ("GET", "/api/health", {"X-Filler": "a" * 20000}, b"", 431),
    ("POST", "/api/todos", {"Content-Type": "application/json"}, b"x" * (TOPO.services.limits["max_body_bytes"] + 1), 413),
]


# Every answer names the load balancer that sent it (X-Balancer: NGINX's $hostname, the node's name).
BALANCERS = {n.name for n in TOPO.group(LOADBALANCER_GROUP)}


def balancer_of(value: str | None) -> str:
    return (value or "").split(".")[0].lower()


def is_error_json(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("error"), str) and "detail" in data


@pytest.mark.parametrize(("method", "path", "headers", "body", "status"), NGINX_ERRORS, ids=lambda v: str(v)[:30])
def test_every_error_of_the_edge_is_json(method: str, path: str, headers: dict[str, str], body: bytes, status: int) -> None:
    got, got_headers, got_body = http(PUBLIC_URL + path, method=method, headers=headers, data=body or None)
    assert got == status, (got, got_body[:200])
    assert got_headers["Content-Type"].startswith("application/json")
    assert is_error_json(got_body), got_body[:200]
    assert balancer_of(got_headers["X-Balancer"]) in BALANCERS, got_headers["X-Balancer"]


def logged_line(node: str, command: str, inventory: str) -> str:
    """The output of `command` on `node` once there is some (a log is written as the answer goes out)."""
    host = testinfra.get_host(f"ansible://{node}", ansible_inventory=inventory)
    return str(wait_until(f"{command!r} on {node}", lambda: host.run(command).stdout, timeout=10))


def test_every_answer_carries_its_request_id_as_the_logs_have_it(request: pytest.FixtureRequest) -> None:
    """X-Request-ID on an answer (an API one and one NGINX gives itself) finds that request's
    line in the answering load balancer's access log, and the API instance's log line."""
    inventory = request.config.getoption("ansible_inventory")
    for path, instance_saw_it in (("/api/todos?limit=1", True), ("/no-such-page", False)):
        response = httpx.get(PUBLIC_URL + path)
        rid = response.headers.get("x-request-id", "")
        assert re.fullmatch(r"[0-9a-f]{32}", rid), (path, response.headers)
        balancer = balancer_of(response.headers["x-balancer"])
        line = logged_line(balancer, f"grep -h {rid} /var/log/nginx/halab_access.json", inventory)
        assert json.loads(line)["uri"] == path, line
        if instance_saw_it:
            node = INSTANCE_NODE[response.headers["x-instance"]]
            journal = f"journalctl -u 'todo-api@*' --since -5min -o cat --no-pager | grep {rid}"
            logged = logged_line(node, journal, inventory)
            assert json.loads(logged.splitlines()[-1])["requestId"] == rid, logged


def test_a_request_it_cannot_read_gets_json_too() -> None:
    url = urlsplit(PUBLIC_URL)
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = s.recv(4096)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/json" in head.lower() and is_error_json(body), answer


def test_redirects_never_name_the_clients_host() -> None:
    response = httpx.get(f"{PUBLIC_URL}/api", headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code in (301, 302, 308), response.status_code
    assert "evil.example" not in response.headers["location"]
    assert response.headers["location"].startswith("/")


def test_the_page_has_security_headers() -> None:
    response = httpx.get(f"{PUBLIC_URL}/")
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert balancer_of(response.headers.get("x-balancer")) in BALANCERS, response.headers.get("x-balancer")


def test_methods_through_the_edge() -> None:
    """HEAD works where GET does; OPTIONS lists every method; non-JSON bodies are 415."""
    head = httpx.head(f"{PUBLIC_URL}/api/todos")
    assert head.status_code == 200 and head.content == b""
    options = httpx.options(f"{PUBLIC_URL}/api/todos")
    allowed = {m.strip() for m in options.headers["allow"].split(",")}
    assert {"GET", "HEAD", "POST", "OPTIONS"} <= allowed, allowed
    form = httpx.post(f"{PUBLIC_URL}/api/todos", data={"texto": "a form"})
    assert form.status_code == 415 and is_error_json(form.content)
    twice = httpx.post(
        f"{PUBLIC_URL}/api/todos",
        content=b'{"texto": "two keys"}',
        headers=[("Content-Type", "application/json"), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert twice.status_code == 400 and is_error_json(twice.content)


def test_too_many_connections_from_one_client_get_a_json_429() -> None:
    """limit_conn: more requests in progress at once than the budget. Each socket sends a POST's
    headers and keeps its body back, so NGINX holds the request open; all are closed after."""
    url = urlsplit(PUBLIC_URL)
    host, port = url.hostname or "", url.port or 80
    sockets: list[socket.socket] = []
    refused: list[bytes] = []
    request = (
        f"POST /api/todos HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n"
    ).encode()
    try:
        for _ in range(300):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(request)
            sockets.append(s)
        time.sleep(1)
        for s in sockets:
            s.settimeout(0.05)
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            if data:
                refused.append(data)
    finally:
        for s in sockets:
            s.close()
    assert refused, "300 requests in progress at once from one client: none refused"
    head, _, body = refused[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429") and b"retry-after" in head.lower(), head
    assert is_error_json(body), body


# Bursts of 10,000 the rate test sends at most before it must have been refused.
BURSTS = 3


@pytest.mark.edge_load
def test_a_client_over_its_request_rate_gets_a_json_429() -> None:
    """limit_req: curl, 200 requests at a time (under the connection budget), bursts of
    10,000 health checks (the API's cheapest answer, so the client outruns the rate even on
    a busy machine) until the edge refuses, at most BURSTS of them. While requests are
    accepted the instances pace the client, so it goes over the rate only as fast as they
    answer; once refused, the edge answers at once. Not on the Vagrant route (marker
    edge_load): emulated VMs serve far below the rate, so no client can go over it there;
    the site file is the same on both routes."""
    fmt = "%{http_code} %{content_type} retry-after=%header{retry-after} x-instance=%header{x-instance}\\n"
    answers: Counter[str] = Counter()
    for burst_no in range(1, BURSTS + 1):
        started = time.monotonic()
        burst = subprocess.run(
            ["curl", "-s", "--max-time", "20", "--parallel", "--parallel-max", "200", "-o", "/dev/null", "-w", fmt,
             f"{PUBLIC_URL}/api/health?n=[1-10000]"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        these = Counter(burst.stdout.splitlines())
        answers += these
        took = time.monotonic() - started
        print(f"\nburst {burst_no} of 10,000 in {took:.2f} s ({10_000 / took:.0f} r/s):", dict(these))
        if any(a.startswith("429 ") for a in these):
            break
    refused = [a for a in answers if a.startswith("429 ")]
    assert refused, answers
    # JSON, told when to come back, and no instance saw it
    assert all(a.split()[1] == "application/json" and a.split()[2] != "retry-after=" for a in refused), refused
    assert all(a.endswith("x-instance=") for a in refused), refused
    assert {a.split()[0] for a in answers} <= {"200", "429"}, answers
