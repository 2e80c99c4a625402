"""What labctl tells its user: progress lines, and the one exception it turns
into a clear message instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

# Where progress lines go (the CLI prints them as "labctl: ...").
Log = Callable[[str], None]


class LabError(Exception):
    """A problem the user can act on; its text says what happened, its hint what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f"\n  {self.hint}" if self.hint else "")


def die(message: str, hint: str | None = None) -> NoReturn:
    raise LabError(message, hint=hint)
