"""Fixtures and helpers for the failover scenarios (they need a provisioned lab)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.probes import INSTANCE_NODE, Probes, wait_until

from .loadgen import LoadRun

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "failover"

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


PROBES = Probes(on_node)
on_instance = PROBES.on_instance
instance_status = PROBES.instance_status
instance_healthy = PROBES.instance_healthy
serves_through_lb = PROBES.serves_through_lb
all_todos = PROBES.all_todos


def labctl(*args: str) -> subprocess.CompletedProcess[str]:
    return sh([sys.executable, "-m", "lab", *args], timeout=600)


def playbook(name: str, **extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), f"playbooks/{name}"]
    for key, value in extra.items():
        cmd += ["-e", f"{key}={value}"]
    return sh(cmd, timeout=600)


def finish(run: LoadRun, name: str, sick: str | None, recover: str | None = "recover") -> dict[str, Any]:
    """Wait for the load to end, check the todos, print and keep the row."""
    run.wait()
    lost, duplicated = run.check_todos(all_todos())
    row = run.report(name, lost, duplicated, instance=sick, recover=recover)
    run.save(ARTIFACTS / f"{name.replace(' ', '_')}.json", row)
    PROBES.forget({a.id for a in run.acknowledged})
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
    yield from PROBES.both_healthy_around(timeout=120)
