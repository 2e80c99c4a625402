"""Fixtures and helpers for the failover scenarios (they need a provisioned lab)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab import topology

from .loadgen import LoadRun

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "failover"
TOPO = topology.load()
LB_URL = f"http://{TOPO.node('lb').address}"
# Which node runs which API instance, from the topology (app1 runs 1 ...).
INSTANCE_NODE = {str(i): n.name for n in TOPO.nodes for i in n.host_vars.get("todo_api_instances", [])}

# Every load run is bounded: this many requests at this rate (20 s), and never
# longer than max_seconds whatever happens.
LOAD = {"total": 2000, "rate": 100.0, "max_seconds": 60.0}

ROWS: list[dict[str, Any]] = []


def sh(cmd: list[str], check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def on_node(node: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return sh([sys.executable, "-m", "lab", "ssh", node, "--", command], check=check, timeout=timeout)


def on_instance(instance: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return on_node(INSTANCE_NODE[instance], command, check=check)


def labctl(*args: str) -> subprocess.CompletedProcess[str]:
    return sh([sys.executable, "-m", "lab", *args], timeout=600)


def playbook(name: str, **extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), f"playbooks/{name}"]
    for key, value in extra.items():
        cmd += ["-e", f"{key}={value}"]
    return sh(cmd, timeout=600)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 90, every: float = 0.5) -> float:
    """Poll until check() is true; return the seconds it took (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except (httpx.HTTPError, subprocess.SubprocessError, AssertionError, ValueError):
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def instance_status(instance: str) -> dict[str, Any]:
    """The instance's own view, through its management plane on the node."""
    out = on_instance(instance, f"todo-apictl --instance {instance} status", check=False).stdout
    return dict(json.loads(out)) if out.strip().startswith("{") else {}


def instance_healthy(instance: str) -> bool:
    return bool(instance_status(instance).get("health", {}).get("status") == "OK")


def serves_through_lb(instance: str, tries: int = 10) -> bool:
    with httpx.Client(base_url=LB_URL, timeout=5) as client:
        return any(client.get("/api/todos").headers.get("x-instance") == instance for _ in range(tries))


def all_todos() -> list[dict[str, Any]]:
    for _ in range(60):
        try:
            response = httpx.get(f"{LB_URL}/api/todos", timeout=5)
            if response.status_code == 200:
                return list(response.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("could not list the todos through the load balancer")


def forget(run: LoadRun) -> None:
    """Delete the run's todos once checked: GET /api/todos returns every todo,
    so a list grown by each scenario would slow every later one."""
    ids = {a.id for a in run.acknowledged}
    with httpx.Client(base_url=LB_URL, timeout=5) as client:
        for todo_id in ids:
            for _ in range(3):
                try:
                    if client.delete(f"/api/todos/{todo_id}").status_code in (204, 404):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)


def finish(run: LoadRun, name: str, sick: str | None, recover: str | None = "recover") -> dict[str, Any]:
    """Wait for the load to end, check the todos, print and keep the row."""
    run.wait()
    lost, duplicated = run.check_todos(all_todos())
    row = run.report(name, lost, duplicated, instance=sick, recover=recover)
    run.save(ARTIFACTS / f"{name.replace(' ', '_')}.json", row)
    forget(run)
    ROWS.append(row)
    print("\n" + format_row(row))
    return row


def assert_clean(row: dict[str, Any], run: LoadRun) -> None:
    failures = run.failures()
    detail = [(o.method, o.status, o.error, o.attempts) for o in failures[:10]]
    assert row["requests"] >= LOAD["total"] * 0.95, f"the load stopped early: {row['requests']} requests"
    assert row["failures"] == 0, f"{row['failures']} client-visible failures, e.g. {detail}"
    assert row["lost"] == 0, f"{row['lost']} acknowledged todos lost"
    assert row["duplicated"] == 0, f"{row['duplicated']} todos stored twice"


HEADER = (
    f"{'scenario':<28} {'requests':>8} {'fail':>5} {'retried':>7} {'lost':>5} {'dup':>4} "
    f"{'p99 ms':>8} {'max ms':>8} {'isolated s':>10} {'readmitted s':>12}"
)


def format_row(row: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else str(value)

    return (
        f"{row['scenario']:<28} {row['requests']:>8} {row['failures']:>5} {row['retried']:>7} {row['lost']:>5} "
        f"{row['duplicated']:>4} {row['p99_ms']:>8} {row['max_ms']:>8} {fmt(row['isolated_after_s']):>10} "
        f"{fmt(row['readmitted_after_s']):>12}"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    lines = [HEADER, *(format_row(r) for r in ROWS)]
    terminalreporter.write_sep("=", "failover scenarios")
    for line in lines:
        terminalreporter.write_line(line)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "summary.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session", autouse=True)
def provisioned_lab() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    for instance in INSTANCE_NODE:
        wait_until(f"instance {instance} healthy", partial(instance_healthy, instance), timeout=60)


@pytest.fixture
def healthy() -> Iterator[None]:
    """Each scenario starts, and leaves, both instances healthy and in rotation."""
    for instance in INSTANCE_NODE:
        wait_until(f"instance {instance} healthy", partial(instance_healthy, instance), timeout=120)
    yield
    for instance in INSTANCE_NODE:
        status = instance_status(instance)
        if status.get("stress", {}).get("allocatedMB"):
            on_instance(instance, f"todo-apictl --instance {instance} clear", check=False)
        wait_until(f"instance {instance} healthy again", partial(instance_healthy, instance), timeout=120)
        wait_until(f"instance {instance} back in rotation", partial(serves_through_lb, instance), timeout=60)
