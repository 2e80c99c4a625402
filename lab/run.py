"""The one way labctl runs a host command: a failure says which command and what it printed."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from .errors import die

# Lines of a long log quoted in a failure (the whole log stays on disk).
LOG_TAIL = 30


def run(
    cmd: list[str], check: bool = True, input_text: str | None = None, log: Path | None = None, what: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run cmd; with check, a failure raises LabError quoting its output.

    Short commands keep their output in the result. With `log`, a long build
    appends its output to that file instead, and a failure quotes the file's
    last lines and names it.
    """
    if log is None:
        result = subprocess.run(cmd, capture_output=True, text=True, input=input_text, check=False)
        if check and result.returncode != 0:
            die(f"`{' '.join(cmd)}` failed: {(result.stderr or result.stdout).strip()}")
        return result
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n")
        out.flush()
        stdin = subprocess.DEVNULL if input_text is None else None
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=stdin, input=input_text, text=True, check=False)
    if check and result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL:])
        die(f"{what or cmd[0]} failed (exit {result.returncode}); full log {log}:\n{tail}")
    return result
