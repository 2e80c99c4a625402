"""The JSON log line: message first, ISO 8601 time, journald priorities, and one copy of
uvicorn's lifecycle lines."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from todo_api import logs


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    """setup_logging rewires process-wide loggers: put them back for the other tests."""
    names = (logs.LOGGER_NAME, "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        n: (
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).propagate,
            logging.getLogger(n).disabled,
        )
        for n in names
    }
    yield
    for name, (handlers, propagate, disabled) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:], lg.propagate, lg.disabled = handlers, propagate, disabled


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
