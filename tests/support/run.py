"""Running a command for a test: its output comes with the failure."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from lab.topology import REPO_ROOT

REPO = REPO_ROOT
VENV_BIN = Path(sys.executable).parent


def venv_tool(name: str) -> str:
    """A tool installed next to this interpreter (ansible-playbook, todo-api ...)."""
    return str(VENV_BIN / name)


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
    tail: int = 3000,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in the repository; with `check`, a non-zero exit fails the test with the output's tail."""
    result = subprocess.run(
        list(cmd), cwd=REPO, capture_output=True, text=True, timeout=timeout, env=None if env is None else dict(env), check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{what or ' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-tail:]}\n{result.stderr[-tail:]}"
        )
    return result
