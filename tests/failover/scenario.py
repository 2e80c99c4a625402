"""What every failover scenario does with its load run: the probes, the row, the table."""

from __future__ import annotations

from typing import Any, Unpack

from tests.support.lab import on_node
from tests.support.model import PUBLIC_URL
from tests.support.probes import Probes, assert_unharmed
from tests.support.run import REPO

from .loadgen import LoadRun, LoadShape

ARTIFACTS = REPO / "artifacts" / "failover"

# Every load run is bounded: this many requests at this rate (20 s), and never
# longer than max_seconds whatever happens.
LOAD: LoadShape = {"total": 2000, "rate": 100.0, "max_seconds": 60.0}

ROWS: list[dict[str, Any]] = []

PROBES = Probes(on_node)


def load(**overrides: Unpack[LoadShape]) -> LoadRun:
    """A load run through the load balancer, started (LOAD, with overrides)."""
    return LoadRun(PUBLIC_URL, **(LOAD | overrides)).start()


def finish(run: LoadRun, name: str, sick: str | None, recover: str | None = "recover") -> dict[str, Any]:
    """Wait for the load to end, check the todos, print and keep the row."""
    row = PROBES.settle(run, name, instance=sick, recover=recover)
    run.save(ARTIFACTS / f"{name.replace(' ', '_')}.json", row)
    ROWS.append(row)
    print("\n" + format_row(row))
    return row


def assert_clean(row: dict[str, Any], run: LoadRun) -> None:
    assert row["requests"] >= LOAD["total"] * 0.95, f"the load stopped early: {row['requests']} requests"
    assert_unharmed(row, run)


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
