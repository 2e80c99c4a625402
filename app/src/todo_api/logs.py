"""JSON lines to stdout (journald), pino-like numeric levels, written without ``logging``.

Each line starts with its message: ``{"msg": ..., "level": 40, "time": "2026-12-02T21:30:00.123Z",
"instance": "1", ...}``. Levels: 20 debug, 30 info, 40 warn, 50 error, 60 fatal (as pino);
``time`` is ISO 8601 in UTC. When stdout is the journal (systemd says so in JOURNAL_STREAM),
each line is prefixed with its syslog priority (``<4>``), which journald takes as the entry's
PRIORITY and strips: ``journalctl -p warning`` then finds the warnings.

Our own lines (``JsonLogger``: the request line, state changes, errors) are formatted here and
written to the stream's file descriptor with one ``os.write`` per line: no ``Logger``,
``LogRecord``, handler lock, formatter or ``findCaller()`` (through ``logging`` the request line
was 11-15 % of the CPU under load). The request line, one per request, is assembled from
preformatted pieces. ``logging`` remains for what third parties log (uvicorn's start/stop and
errors, or a ``todo_api.*`` child logger): one handler formats those with ``JsonFormatter`` and
writes them through the same writer, so both kinds stay in order on one stream.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _json_str  # what json.dumps uses for str
from types import TracebackType
from typing import Any, TextIO, TypeAlias

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
REQUEST_MESSAGE = "request completed"

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

ExcInfo: TypeAlias = (
    bool
    | BaseException
    | tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
    | None
)


def iso_time(created: float) -> str:
    """An epoch time as ISO 8601 in UTC, to the millisecond: 2026-12-02T21:30:00.123Z."""
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class Clock:
    """``iso_time(time.time())`` with the date and time of day kept per whole second."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def iso(self, created: float) -> str:
        # datetime.fromtimestamp: microseconds rounded half-even, then isoformat truncates
        second = int(created)
        us = round((created - second) * 1e6)
        if us >= 1_000_000:
            second += 1
            us -= 1_000_000
        if second != self.second:
            self.prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self.second = second
        return f"{self.prefix}{us // 1000:03d}Z"


def writes_to_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether `stream` is the journal systemd connected (JOURNAL_STREAM: its "device:inode")."""
    expected = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return bool(expected) and expected == f"{st.st_dev}:{st.st_ino}"


LineWriter = Callable[[str], None]


def line_writer(stream: TextIO) -> LineWriter:
    """A function writing one line (newline added) at once: ``os.write`` on the stream's file
    descriptor when it has one (unbuffered: the journal has each line as soon as it is logged),
    else ``stream.write`` + ``flush``. A line that cannot be written is dropped, as ``logging``
    did (its ``handleError``): a log line never fails a request."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        fd = -1
    if fd < 0:

        def write_text(line: str) -> None:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass

        return write_text
    stream.flush()  # what was written through the text layer before goes out first
    write = os.write

    def write_fd(line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        try:
            n = write(fd, data)
            while n < len(data):  # a signal, or a pipe or socket short of room
                data = data[n:]
                n = write(fd, data)
        except OSError:
            pass

    return write_fd


class Coalescing:
    """Request lines of one event-loop iteration written together at its end (``later``): one
    system call for the request lines of a busy iteration, where a write each was ~3 % of a
    request's CPU under load. Every other line is written at once (``now``), after the request
    lines still waiting, so the order holds: a warning must not wait, since the process may be
    killed before the iteration ends (an OOM kill right after "memory over threshold" lost
    that line when every line waited). Outside a loop, and at exit, nothing waits."""

    def __init__(self, write: LineWriter) -> None:
        self._write = write
        self._pending: list[str] = []
        atexit.register(self.flush)

    def flush(self) -> None:
        if self._pending:
            lines = "\n".join(self._pending)
            self._pending.clear()
            self._write(lines)

    def now(self, line: str) -> None:
        self.flush()
        self._write(line)

    def later(self, line: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.now(line)
            return
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append(line)


class JsonFormatter(logging.Formatter):
    """Third parties' records (uvicorn) as our JSON line, plus ``logger``: their name."""

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


class _WriterHandler(logging.Handler):
    """Hands formatted third-party records to the line writer our own lines use."""

    def __init__(self, write: LineWriter) -> None:
        super().__init__()
        self.write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write(line)


class JsonLogger:
    """The instance's own log: ``info/warning/error(msg, *args, extra=..., exc_info=...)`` as a
    ``logging.Logger`` is called, and ``request()``, the per-request line.

    Configured (``setup_logging``), it formats and writes each line itself; the same JSON as
    ``JsonFormatter`` gives (the tests compare them byte for byte). Not configured (the app
    built in-process, as the tests do), it passes every call to the ``logging`` logger of its
    name, as before: there a line is whatever ``logging`` is set up to do with it."""

    def __init__(
        self,
        name: str = LOGGER_NAME,
        instance: str | None = None,
        write: LineWriter | None = None,
        level: int = logging.INFO,
        journal: bool = False,
        write_request: LineWriter | None = None,
    ) -> None:
        """``write_request``: for request lines only (Coalescing.later); default ``write``."""
        self.name = name
        self.logger = logging.getLogger(name)
        self.instance = instance
        self.write = write if instance is not None else None
        self.write_request = write_request or self.write
        self.level = level
        self.journal = journal
        self._clock = Clock()
        self._formatter = logging.Formatter()  # formatException only
        self._request_on = self.write is not None and level <= logging.INFO
        prefix = f"<{SYSLOG_PRIORITIES[logging.INFO]}>" if journal else ""
        # the request line up to its time, and from the time to the method's value
        self._req_head = f'{prefix}{{"msg":"{REQUEST_MESSAGE}","level":30,"time":"'
        self._req_mid = f'","instance":{_json_str(instance or "")},"method":'

    def isEnabledFor(self, level: int) -> bool:  # logging.Logger's name
        if self.write is None:
            return self.logger.isEnabledFor(level)
        return level >= self.level

    def line(
        self,
        level: int,
        msg: str,
        extra: Mapping[str, object] | None = None,
        err: str | None = None,
        created: float | None = None,
    ) -> str:
        """One formatted line (what ``JsonFormatter`` makes of the same call)."""
        out: dict[str, Any] = {
            "msg": msg,
            "level": LEVELS.get(level, 30),
            "time": self._clock.iso(time.time() if created is None else created),
            "instance": self.instance,
        }
        if extra:
            for k, v in extra.items():
                if not k.startswith("_"):
                    out[k] = v
        if err is not None:
            out["err"] = err
        text = json.dumps(out, default=str, separators=(",", ":"))
        if self.journal:
            return f"<{SYSLOG_PRIORITIES.get(level, 6)}>{text}"
        return text

    def log(
        self,
        level: int,
        msg: str,
        *args: object,
        extra: Mapping[str, object] | None = None,
        exc_info: ExcInfo = None,
    ) -> None:
        if self.write is None:
            self.logger.log(level, msg, *args, extra=extra, exc_info=exc_info, stacklevel=2)
            return
        if level < self.level:
            return
        err: str | None = None
        if exc_info:
            if isinstance(exc_info, BaseException):
                ei: Any = (type(exc_info), exc_info, exc_info.__traceback__)
            elif isinstance(exc_info, tuple):
                ei = exc_info
            else:
                ei = sys.exc_info()
            if ei[0] is not None:
                err = self._formatter.formatException(ei)
        self.write(self.line(level, msg % args if args else msg, extra, err))

    def debug(self, msg: str, *args: object, **kw: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kw)

    def info(self, msg: str, *args: object, **kw: Any) -> None:
        self.log(logging.INFO, msg, *args, **kw)

    def warning(self, msg: str, *args: object, **kw: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kw)

    def error(self, msg: str, *args: object, **kw: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kw)

    def critical(self, msg: str, *args: object, **kw: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kw)

    def exception(self, msg: str, *args: object, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self.log(logging.ERROR, msg, *args, **kw)

    def request_line(
        self,
        method: str,
        path: str,
        status: int,
        duration_ms: float,
        request_id: str | None,
        created: float,
    ) -> str:
        """The request line, from preformatted pieces: the bytes ``line()`` gives for
        ``info("request completed", extra={method, path, status, durationMs, requestId})``."""
        rid = "null" if request_id is None else _json_str(request_id)
        return (
            f"{self._req_head}{self._clock.iso(created)}{self._req_mid}{_json_str(method)}"
            f',"path":{_json_str(path)},"status":{int(status)},"durationMs":'
            f'{float(duration_ms)!r},"requestId":{rid}}}'
        )

    def request(
        self, method: str, path: str, status: int, duration_ms: float, request_id: str | None
    ) -> None:
        """Log one request (level 30): the hot path, one preformatted write."""
        if self._request_on:
            assert self.write_request is not None
            self.write_request(
                self.request_line(method, path, status, duration_ms, request_id, time.time())
            )
        elif self.write is None and self.logger.isEnabledFor(logging.INFO):
            # not configured: through logging, minus findCaller() (the line has no file/line)
            self.logger.handle(
                self.logger.makeRecord(
                    self.name, logging.INFO, "(unknown file)", 0, REQUEST_MESSAGE, (), None,
                    extra={
                        "method": method,
                        "path": path,
                        "status": status,
                        "durationMs": duration_ms,
                        # one request in NGINX's access log and here: the same id
                        "requestId": request_id,
                    },
                )
            )


_process_logger = JsonLogger()


def setup_logging(
    instance: str, level: int = logging.INFO, stream: TextIO | None = None
) -> JsonLogger:
    """Our lines and uvicorn's as JSON on stdout (one writer), and the process's ``JsonLogger``
    (``get_logger()``) configured to write them."""
    global _process_logger
    out = sys.stdout if stream is None else stream
    journal = writes_to_journal(out)
    lines = Coalescing(line_writer(out))
    write = lines.now
    handler = _WriterHandler(write)
    handler.setFormatter(JsonFormatter(instance, journal=journal))
    handler.addFilter(OncePerProcess())
    # LOGGER_NAME too: a child logger (todo_api.x) of a library-style module still logs
    for name in (LOGGER_NAME, "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level)
        lg.propagate = False
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.disabled = True
    _process_logger = JsonLogger(LOGGER_NAME, instance, write, level, journal, lines.later)
    return _process_logger


def get_logger() -> JsonLogger:
    return _process_logger


def now_ms() -> int:
    return int(time.time() * 1000)
