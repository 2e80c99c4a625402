"""How the failover table times isolation and readmission (tests/failover/loadgen.py): from
the scenario's marks to the instance's last and first answers, to either client."""

from __future__ import annotations

from tests.failover.loadgen import LoadRun, Outcome


def run_at(t0: float, answers: list[tuple[float, str]], marks: dict[str, float]) -> LoadRun:
    """A finished run that started at monotonic `t0`: one answer per (seconds since t0, instance)."""
    run = LoadRun("http://127.0.0.1:9", total=1)
    run._t0 = t0
    run.marks = marks
    run.outcomes = [
        Outcome(i, "GET", at, 0.0, 200, who, 1, 200, served_by=[(at, who)]) for i, (at, who) in enumerate(answers)
    ]
    return run


def test_a_client_alone_times_its_own_answers() -> None:
    marks = {"fault": 2.0, "recover": 5.0, "ready": 5.5}
    careful = run_at(100.0, [(1.0, "1"), (2.9, "1"), (3.5, "2"), (6.0, "2"), (8.0, "1")], marks)
    stopped, readmitted = careful.isolation_times("1", "fault", "recover")
    assert (round(stopped or 0, 6), readmitted) == (0.9, 2.5)


def test_answers_to_the_other_client_count_on_its_own_timeline() -> None:
    """The naive run started 0.25 s after the careful one: its answer at 5.5 s is the careful
    run's 5.75 s, the instance's first after ready (5.5), not the careful client's own 8.0."""
    marks = {"fault": 2.0, "recover": 5.0, "ready": 5.5}
    careful = run_at(100.0, [(1.0, "1"), (3.5, "2"), (8.0, "1")], marks)
    naive = run_at(100.25, [(2.5, "1"), (5.5, "1")], {k: v - 0.25 for k, v in marks.items()})
    stopped, readmitted = careful.isolation_times("1", "fault", "recover", together=[naive])
    assert stopped is not None and round(stopped, 6) == 0.75  # naive's 2.5 s is careful's 2.75 s
    assert readmitted is not None and round(readmitted, 6) == 0.25
    assert careful.isolation_times("1", "fault", "recover") == (0.0, 2.5)
