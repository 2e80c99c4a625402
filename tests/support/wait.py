"""Waiting for a condition, always with a bound."""

from __future__ import annotations

import subprocess
import time
import urllib.error
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")

# What a check may raise while the thing it looks at is not there yet.
NOT_YET = (httpx.HTTPError, urllib.error.URLError, OSError, subprocess.SubprocessError, AssertionError, ValueError, KeyError)


def poll(check: Callable[[], T], timeout: float, every: float = 0.5) -> T | None:
    """check()'s first true value within `timeout` seconds, else None (it is tried once more at the end)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except NOT_YET:
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(every)


def wait_until(what: str, check: Callable[[], T], timeout: float = 90, every: float = 0.5) -> T:
    """check()'s first true value; fails the test after `timeout` seconds."""
    value = poll(check, timeout, every)
    if not value:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
    return value
