"""What every failover scenario does with its load: the two clients, the probes, the rows, the table."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Unpack

from tests.support.lab import on_node
from tests.support.model import PUBLIC_URL
from tests.support.probes import Probes, assert_unharmed
from tests.support.run import REPO
from tests.support.wait import poll

from .loadgen import LoadRun, LoadShape, NaiveRun, Outcome

ARTIFACTS = REPO / "artifacts" / "failover"

# Every load run is bounded: this many requests at this rate (20 s), and never
# longer than max_seconds whatever happens. Each scenario runs two at once, the
# careful client and the naive one, each with this shape.
LOAD: LoadShape = {"total": 2000, "rate": 100.0, "max_seconds": 60.0}

ROWS: list[dict[str, Any]] = []

PROBES = Probes(on_node)


@dataclass
class Loads:
    """The careful and the naive client, started together against the same fault."""

    careful: LoadRun
    naive: LoadRun

    def __iter__(self) -> Iterator[LoadRun]:
        return iter((self.careful, self.naive))

    def start(self) -> Loads:
        for run in self:
            run.start()
        return self

    def mark(self, name: str) -> None:
        for run in self:
            run.mark(name)

    def mark_at(self, name: str, monotonic: float) -> None:
        for run in self:
            run.mark_at(name, monotonic)

    def stop(self) -> None:
        for run in self:
            run.stop()

    def finished(self) -> bool:
        return all(run.finished() for run in self)

    def stop_at(self, requests: int) -> None:
        """Stop both once each has sent `requests` (the scenario's row must hold that many,
        whenever its fault ended); a run that ends first by its own bounds ends there."""
        poll(
            lambda: all(run.progress() >= requests or run.finished() for run in self),
            timeout=max(run.max_seconds for run in self),
            every=0.1,
        )
        self.stop()

    @property
    def marks(self) -> dict[str, float]:
        """The careful run's marks (both runs started within milliseconds of each other)."""
        return self.careful.marks


def unit_time(instance: str, prop: str) -> float:
    """A monotonic timestamp systemd keeps for the instance's unit (on the nspawn lab, this
    host's clock: time.monotonic())."""
    usec = PROBES.on_instance(instance, f"systemctl show -p {prop}Monotonic --value todo-api@{instance}").stdout
    return int(usec.strip()) / 1e6


# The fault and readiness moments are the system's own clocks where it has them (a unit
# leaving active, a unit ready again, the instance's own unhealthy line), not when a command
# was issued from here: isolation and readmission are then the load balancer's, not the time
# SSH or Ansible take to start.
def mark_ready(run: Loads, instance: str) -> None:
    """Mark `ready`: when the instance's unit last became active (Type=notify: READY=1 is
    sent once it serves and has reached Redis). Readmission is timed from there."""
    run.mark_at("ready", unit_time(instance, "ActiveEnterTimestamp"))


def naive_shape(shape: LoadShape) -> LoadShape:
    """The naive client's shape beside a careful one: the scenario's count, pace, bound and
    mix; its connections, timeout and no-retry are its own (loadgen.NaiveRun)."""
    naive = LoadShape(total=shape["total"], rate=shape["rate"], max_seconds=shape["max_seconds"])
    if "post_every" in shape:
        naive["post_every"] = shape["post_every"]
    return naive


def load(**overrides: Unpack[LoadShape]) -> Loads:
    """Both clients through the load balancer, started together (LOAD, with overrides)."""
    shape: LoadShape = LOAD | overrides
    return Loads(LoadRun(PUBLIC_URL, **shape), NaiveRun(PUBLIC_URL, **naive_shape(shape))).start()


def finish(
    loads: Loads,
    name: str,
    sick: str | None,
    recover: str | None = "recover",
    note: Callable[[LoadRun], str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait for both loads to end, check the todos, print and keep both rows
    (careful, naive); `note` writes a figure of the run into its row."""
    careful, naive = PROBES.settle_all(list(loads), name, instance=sick, recover=recover)
    for run, row in zip(loads, (careful, naive), strict=True):
        failed = ", ".join(f"{status or 'no answer'} x{n}" for status, n in row["failed_by"].items())
        row["note"] = "; ".join(part for part in (note(run) if note else "", failed and f"failed: {failed}") if part)
        run.save(ARTIFACTS / f"{name.replace(' ', '_')}.{run.client}.json", row)
    return keep(careful), keep(naive)


def keep(row: dict[str, Any]) -> dict[str, Any]:
    """Into the table, and printed now."""
    ROWS.append(row)
    print("\n" + format_row(row))
    return row


def figure_row(scenario: str, tries: int, note: str) -> dict[str, Any]:
    """A row for a timed figure with no load behind it (`tries` faults, the figure in `note`)."""
    return {
        "scenario": scenario,
        "requests": tries,
        "failures": 0,
        "retried": 0,
        "lost": 0,
        "duplicated": 0,
        "p99_ms": "-",
        "max_ms": "-",
        "isolated_after_s": None,
        "readmitted_after_s": None,
        "note": note,
    }


def assert_full_length(row: dict[str, Any]) -> None:
    """The row holds (nearly) the load's whole count: the fault did not cut the load short."""
    assert row["requests"] >= LOAD["total"] * 0.95, f"the load stopped early: {row['requests']} requests"


def assert_clean(row: dict[str, Any], run: LoadRun) -> None:
    assert_full_length(row)
    try:
        assert_unharmed(row, run)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{evidence(run.failures())}") from None


def evidence(failures: Sequence[Outcome], limit: int = 3) -> str:
    """What the first failed requests met on their way (Probes.trace): for the failure message."""
    ids = [o.refusals[-1].request_id for o in failures if o.refusals and o.refusals[-1].request_id]
    return PROBES.trace([i for i in ids if i][:limit])


def assert_kept(row: dict[str, Any]) -> None:
    """Whatever the clients saw, no acknowledged todo was lost or stored twice."""
    assert row["lost"] == 0, f"{row['scenario']}: {row['lost']} acknowledged todos lost"
    assert row["duplicated"] == 0, f"{row['scenario']}: {row['duplicated']} todos stored twice"


def unclear(failures: list[Outcome], api_only: bool = False) -> list[tuple[Any, ...]]:
    """The failures that were not a clear refusal: a JSON 503 with Retry-After
    (with api_only, from an API instance: X-Instance set). Empty is good."""
    bad = []
    for o in failures:
        last = o.refusals[-1] if o.refusals else None
        clear = o.status == 503 and last is not None and last.json_body and bool(last.retry_after)
        if api_only:
            clear = clear and last is not None and last.instance is not None
        if not clear:
            bad.append((o.index, o.method, o.status, o.error, last))
    return bad


def assert_unclear_at_most_one_per_connection(naive: LoadRun) -> None:
    """The naive client's failures other than a clear refusal (unclear(): no answer at all)
    are at most one per connection it keeps (NaiveRun.CONNECTIONS)."""
    unanswered = unclear(naive.failures())
    assert len(unanswered) <= NaiveRun.CONNECTIONS, (len(unanswered), unanswered[:10])


HEADER = (
    f"{'scenario':<44} {'requests':>8} {'fail':>5} {'retried':>7} {'lost':>5} {'dup':>4} "
    f"{'p99 ms':>8} {'max ms':>8} {'isolated s':>10} {'readmitted s':>12}  note"
)


def format_row(row: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else str(value)

    return (
        f"{row['scenario']:<44} {row['requests']:>8} {row['failures']:>5} {row['retried']:>7} {row['lost']:>5} "
        f"{row['duplicated']:>4} {row['p99_ms']:>8} {row['max_ms']:>8} {fmt(row['isolated_after_s']):>10} "
        f"{fmt(row['readmitted_after_s']):>12}  {row.get('note', '')}"
    ).rstrip()
