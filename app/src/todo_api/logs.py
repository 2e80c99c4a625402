"""JSON lines to stdout (journald), pino-like numeric levels.

Each line starts with its message: ``{"msg": ..., "level": 40, "time": "2026-12-02T21:30:00.123Z",
"instance": "1", ...}``. Levels: 20 debug, 30 info, 40 warn, 50 error, 60 fatal (as pino);
``time`` is ISO 8601 in UTC. When stdout is the journal (systemd says so in JOURNAL_STREAM),
each line is prefixed with its syslog priority (``<4>``), which journald takes as the entry's
PRIORITY and strips: ``journalctl -p warning`` then finds the warnings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = {
    logging.DEBUG: 20,
    logging.INFO: 30,
    logging.WARNING: 40,
    logging.ERROR: 50,
    logging.CRITICAL: 60,
}
# syslog(3) priorities: journald reads a "<N>" line prefix (SyslogLevelPrefix=, on by default)
SYSLOG_PRIORITIES = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

LOGGER_NAME = "todo_api"

# uvicorn's lifecycle lines, which each of the process's two servers (public, management)
# would print: once per process is enough.
LIFECYCLE_MESSAGES = frozenset(
    {
        "Started server process [%d]",
        "Waiting for application startup.",
        "Application startup complete.",
        "Shutting down",
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        "Finished server process [%d]",
    }
)


def iso_time(created: float) -> str:
    """An epoch time as ISO 8601 in UTC, to the millisecond: 2026-12-02T21:30:00.123Z."""
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def writes_to_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether `stream` is the journal systemd connected (JOURNAL_STREAM: its "device:inode")."""
    expected = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return bool(expected) and expected == f"{st.st_dev}:{st.st_ino}"


class JsonFormatter(logging.Formatter):
    def __init__(self, instance: str, journal: bool = False) -> None:
        super().__init__()
        self.instance = instance
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "msg": record.getMessage(),
            "level": LEVELS.get(record.levelno, 30),
            "time": iso_time(record.created),
            "instance": self.instance,
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_") and k != "color_message":
                out[k] = v
        if record.name != LOGGER_NAME:
            out["logger"] = record.name
        if record.exc_info:
            out["err"] = self.formatException(record.exc_info)
        line = json.dumps(out, default=str, separators=(",", ":"))
        if self.journal:
            return f"<{SYSLOG_PRIORITIES.get(record.levelno, 6)}>{line}"
        return line


class OncePerProcess(logging.Filter):
    """Lets each of uvicorn's lifecycle lines through once (the second server's copy is dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in LIFECYCLE_MESSAGES:
            return True
        line = record.getMessage()
        if line in self.seen:
            return False
        self.seen.add(line)
        return True


def setup_logging(
    instance: str, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Logger:
    """Route our logger and uvicorn's through one JSON handler on stdout."""
    out = sys.stdout if stream is None else stream
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(instance, journal=writes_to_journal(out)))
    handler.addFilter(OncePerProcess())
    for name in (LOGGER_NAME, "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level)
        lg.propagate = False
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.disabled = True
    return logging.getLogger(LOGGER_NAME)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def now_ms() -> int:
    return int(time.time() * 1000)
