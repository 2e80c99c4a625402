"""The JSON log line: message first, ISO 8601 time, journald priorities, and one copy of
uvicorn's lifecycle lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from todo_api import logs


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """setup_logging rewires process-wide loggers: put them back for the other tests."""
    names = (logs.LOGGER_NAME, "uvicorn", "uvicorn.error", "uvicorn.access")
    process_logger = logs.get_logger()
    saved = {
        n: (
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).propagate,
            logging.getLogger(n).disabled,
        )
        for n in names
    }
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for name, (handlers, propagate, disabled) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:], lg.propagate, lg.disabled = handlers, propagate, disabled
        lg.setLevel(levels[name])
    logs._process_logger = process_logger


def record(
    level: int, msg: str, *args: object, name: str = logs.LOGGER_NAME, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.created = datetime(2026, 12, 2, 21, 30, 0, 123456, tzinfo=UTC).timestamp()
    rec.__dict__.update(extra)
    return rec


def test_the_message_comes_first_then_level_time_and_instance() -> None:
    line = logs.JsonFormatter("1").format(
        record(logging.WARNING, "memoria alta", rssMB=480, memoryPercent=94)
    )
    assert line.startswith('{"msg":"memoria alta","level":40,')
    assert json.loads(line) == {
        "msg": "memoria alta",
        "level": 40,
        "time": "2026-12-02T21:30:00.123Z",
        "instance": "1",
        "rssMB": 480,
        "memoryPercent": 94,
    }


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
    ],
)
def test_on_the_journal_each_line_carries_its_syslog_priority(level: int, priority: int) -> None:
    line = logs.JsonFormatter("2", journal=True).format(record(level, "x"))
    assert line.startswith(f"<{priority}>{{")
    assert json.loads(line[len(f"<{priority}>") :])["level"] == logs.LEVELS[level]


def test_the_journal_is_recognised_by_the_device_and_inode_systemd_names(tmp_path: Path) -> None:
    with (tmp_path / "stream").open("w") as stream:
        st = os.fstat(stream.fileno())
        assert logs.writes_to_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not logs.writes_to_journal(
            stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}
        )
        assert not logs.writes_to_journal(stream, {})
    # no file descriptor
    assert not logs.writes_to_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_two_servers_print_uvicorns_lifecycle_lines_once(restore_loggers: None) -> None:
    out = io.StringIO()
    logs.setup_logging("1", stream=out)
    uvicorn = logging.getLogger("uvicorn.error")
    for _server in ("public", "management"):
        uvicorn.info("Started server process [%d]", 4242)
        uvicorn.info("Application startup complete.")
        uvicorn.info("Uvicorn running on %s", _server)
    logs.get_logger().warning("memoria alta")
    logs.get_logger().warning("memoria alta")  # our own lines are never deduplicated
    messages = [json.loads(line)["msg"] for line in out.getvalue().splitlines()]
    assert messages == [
        "Started server process [4242]",
        "Application startup complete.",
        "Uvicorn running on public",
        "Uvicorn running on management",
        "memoria alta",
        "memoria alta",
    ]
    assert not out.getvalue().startswith("<")  # a StringIO is not the journal


CREATED = datetime(2026, 12, 2, 21, 30, 0, 123456, tzinfo=UTC).timestamp()


def logger_record(extra: dict[str, object], level: int = logging.INFO) -> logging.LogRecord:
    """The record the middleware used to make for a request (Logger.makeRecord, no caller)."""
    rec = logging.getLogger(logs.LOGGER_NAME).makeRecord(
        logs.LOGGER_NAME, level, "(unknown file)", 0, logs.REQUEST_MESSAGE, (), None,
        extra=extra,
    )
    rec.created = CREATED
    return rec


@pytest.mark.parametrize("journal", [False, True])
@pytest.mark.parametrize(
    ("method", "path", "status", "duration", "rid"),
    [
        ("GET", "/api/health", 200, 0.31, None),
        ("POST", "/api/todos", 201, 12.0, "b1e5c0de"),
        ("HEAD", '/api/todos/"quoted"\\back', 404, 1234.57, "x" * 64),
        ("DELETE", "/api/todos/ñandú ☃\n\t", 204, 1e-05, "caf\xe9"),
        ("PATCH", "/\u2028", 500, 100000000000000.0, ""),
    ],
)
def test_the_request_line_is_byte_for_byte_the_formatters(
    journal: bool, method: str, path: str, status: int, duration: float, rid: str | None
) -> None:
    extra: dict[str, object] = {
        "method": method, "path": path, "status": status, "durationMs": duration,
        "requestId": rid,
    }
    before = logs.JsonFormatter("1", journal=journal).format(logger_record(extra))
    jl = logs.JsonLogger(instance="1", write=lambda line: None, journal=journal)
    assert jl.request_line(method, path, status, duration, rid, CREATED) == before
    assert jl.line(logging.INFO, logs.REQUEST_MESSAGE, extra, created=CREATED) == before
    assert before.startswith("<6>{" if journal else "{")


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING, logging.ERROR])
def test_our_other_lines_are_the_formatters_too(level: int) -> None:
    extra: dict[str, Any] = {
        "rssMB": 480.5, "memoryPercent": 94.1, "reasons": ["memory 94.1% >= 80%"],
        "memorySource": "cgroup-v2", "replicas": None, "when": datetime(2026, 1, 1),
    }
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        error = exc
    rec = record(level, "health: UNHEALTHY", **extra)
    rec.created = CREATED
    rec.exc_info = (RuntimeError, error, error.__traceback__)
    for journal in (False, True):
        before = logs.JsonFormatter("7", journal=journal).format(rec)
        out: list[str] = []
        jl = logs.JsonLogger(instance="7", write=out.append, journal=journal)
        err = logging.Formatter().formatException(rec.exc_info)
        assert jl.line(level, "health: UNHEALTHY", extra, err, created=CREATED) == before
        jl.log(level, "health: %s", "UNHEALTHY", extra=extra, exc_info=error)
        assert json.loads(out[0].removeprefix(f"<{logs.SYSLOG_PRIORITIES[level]}>"))["err"] == (
            json.loads(before.removeprefix(f"<{logs.SYSLOG_PRIORITIES[level]}>"))["err"]
        )


def test_the_cached_clock_gives_iso_time() -> None:
    clock = logs.Clock()
    base = datetime(2026, 12, 2, 23, 59, 58, tzinfo=UTC).timestamp()
    steps = [i / 1000 for i in range(3000)] + [0.9994999, 0.9995, 0.9999995, 0.99999949, 1.0]
    for t in [base + d for d in steps] + [1e9 + 0.0005, 1800000000.123456]:
        assert clock.iso(t) == logs.iso_time(t), t


def test_lines_go_out_whole_and_in_order_on_the_descriptor(
    restore_loggers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")  # "the journal"
        stream.write("before\n")  # pending in the text layer: written out first
        log = logs.setup_logging("3", stream=stream)
        assert logs.get_logger() is log
        log.request("GET", "/api/health", 200, 0.5, None)
        logging.getLogger("uvicorn.error").error("Exception in ASGI application")
        log.warning("memory over threshold", extra={"memoryPercent": 81.0})
        log.debug("not at info level")
        logging.getLogger("todo_api.store").info("a child logger")
        # straight to the descriptor: nothing waits in a buffer
        lines = path.read_text().splitlines()
    assert lines[0] == "before"
    prios = [line[: line.index("{")] for line in lines[1:]]
    assert prios == ["<6>", "<3>", "<4>", "<6>"]  # journalctl -p warning: the middle two
    got = [json.loads(line[3:]) for line in lines[1:]]
    assert [g["msg"] for g in got] == [
        "request completed", "Exception in ASGI application", "memory over threshold",
        "a child logger",
    ]
    assert [g["level"] for g in got] == [30, 50, 40, 30]
    assert got[0]["requestId"] is None and got[0]["instance"] == "3"
    assert got[1]["logger"] == "uvicorn.error" and got[3]["logger"] == "todo_api.store"
    assert "logger" not in got[2] and got[2]["memoryPercent"] == 81.0


def test_without_setup_lines_go_through_logging(
    restore_loggers: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The app built in-process (tests): a line is what logging makes of it, as before."""
    log = logs.JsonLogger()
    caplog.set_level(logging.INFO, logger=logs.LOGGER_NAME)
    log.request("POST", "/api/todos", 201, 1.5, "abc")
    log.warning("memory %s", "high", extra={"memoryPercent": 90.0})
    assert [(r.getMessage(), r.levelno) for r in caplog.records] == [
        ("request completed", logging.INFO), ("memory high", logging.WARNING)
    ]
    assert caplog.records[0].__dict__["requestId"] == "abc"
    assert caplog.records[1].__dict__["memoryPercent"] == 90.0


def test_request_lines_of_one_loop_iteration_are_written_together() -> None:
    """In a running loop, the request lines of one iteration go out in one write at its end;
    any other line at once, after them (in order); outside a loop nothing waits."""
    writes: list[str] = []
    lines = logs.Coalescing(writes.append)
    jl = logs.JsonLogger(instance="7", write=lines.now, write_request=lines.later)

    async def scenario() -> None:
        for i in range(3):
            jl.request("GET", f"/r{i}", 200, 1.0, None)
        assert writes == []
        await asyncio.sleep(0)  # the iteration ends
        assert len(writes) == 1 and [json.loads(x)["path"] for x in writes[0].split("\n")] == [
            "/r0", "/r1", "/r2"
        ]
        jl.request("GET", "/r3", 200, 1.0, None)
        jl.warning("memory over threshold")  # written at once, the waiting request line first
        msgs = [json.loads(x)["msg"] for x in writes[1:]]
        assert msgs == ["request completed", "memory over threshold"]

    asyncio.run(scenario())
    jl.request("GET", "/after", 200, 1.0, None)
    assert json.loads(writes[-1])["path"] == "/after" and len(writes) == 4
