"""JSON lines to stdout (journald), pino-like numeric levels.

Levels: 20 debug, 30 info, 40 warn, 50 error, 60 fatal. ``time`` is epoch milliseconds (as pino).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LEVELS = {
    logging.DEBUG: 20,
    logging.INFO: 30,
    logging.WARNING: 40,
    logging.ERROR: 50,
    logging.CRITICAL: 60,
}
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

LOGGER_NAME = "todo_api"


class JsonFormatter(logging.Formatter):
    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "level": LEVELS.get(record.levelno, 30),
            "time": int(record.created * 1000),
            "instance": self.instance,
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_") and k != "color_message":
                out[k] = v
        out["msg"] = record.getMessage()
        if record.name != LOGGER_NAME:
            out["logger"] = record.name
        if record.exc_info:
            out["err"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(instance: str, level: int = logging.INFO) -> logging.Logger:
    """Route our logger and uvicorn's through one JSON handler on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(instance))
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
