"""Fixtures and the summary table of the failover scenarios (they need a provisioned lab)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from .scenario import ARTIFACTS, HEADER, PROBES, ROWS, format_row


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    lines = [HEADER, *(format_row(r) for r in ROWS)]
    terminalreporter.write_sep("=", "failover scenarios")
    lines += ["", "Redis stalls over its latency-monitor-threshold (LATENCY LATEST, since Redis started):"]
    lines += PROBES.redis_stalls().splitlines()
    for line in lines:
        terminalreporter.write_line(line)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "summary.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session", autouse=True)
def provisioned_lab() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    PROBES.all_healthy(timeout=60)


@pytest.fixture
def healthy() -> Iterator[None]:
    yield from PROBES.both_healthy_around(timeout=120)
