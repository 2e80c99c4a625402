"""Property-based API test: Schemathesis (pinned in requirements-dev.lock) runs the app's own
OpenAPI document against the real server (the todo-api entry point, uvloop + httptools, on a
loopback port) and a real redis-server: every operation, every phase (schema examples, the
coverage phase's boundary and negative values and undeclared methods, random fuzzing, and
stateful sequences that follow the schema's links: create -> get/patch/delete), all checks
(no 5xx, status code documented, body and headers as documented, Allow on 405/OPTIONS, valid
data accepted and invalid data refused, a deleted todo is gone...). 0 failures, >= 1000 cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RedisServer, free_port

APP = Path(__file__).resolve().parents[1]
MIN_CASES = 1000
MAX_EXAMPLES = 300  # per operation and phase (9 operations); the count varies run to run (stateful)
SEED = 13  # reproducible: the same cases every run (change it to explore)
FUZZ_DB = 3  # its own Redis database: the other tests flush db 0


@pytest.fixture
def live_server(tmp_path: Path, redis_server: RedisServer) -> Iterator[str]:
    redis.Redis(port=redis_server.port, db=FUZZ_DB).flushdb()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TODO_API_", "NOTIFY_"))}
    env.update(
        TODO_API_INSTANCE="fuzz",
        TODO_API_PORT=str(port),
        TODO_API_MANAGEMENT=f"unix:{tmp_path}/manage.sock",
        TODO_API_REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/{FUZZ_DB}",
        # far from any threshold: shedding (429) is not what this test looks at
        TODO_API_MEMORY_LIMIT_MB="8192",
        TODO_API_CGROUP_ROOT=str(tmp_path / "no-cgroup"),
        TODO_API_PROC_SELF_CGROUP=str(tmp_path / "no-proc"),
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "todo_api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(15)
        errors = [x for x in log.read_text().splitlines() if '"level":50' in x]
        print(f"server error lines: {len(errors)}", *errors[:5], sep="\n")


def test_fuzz_openapi(live_server: str, tmp_path: Path) -> None:
    report = tmp_path / "schemathesis.json"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(APP)}
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{live_server}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "5",
        "--report", "json", "--report-json-path", str(report),
        "--no-color",
    ]
    started = time.monotonic()
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert report.exists(), p.stdout[-4000:] + p.stderr[-4000:]
    run = json.loads(report.read_text())
    cases = run["test_cases"]
    print(
        f"schemathesis {run['schemathesis_version']}: {cases['generated']} cases over "
        f"{run['operations']['tested']} operations in {elapsed:.1f} s, phases "
        + ", ".join(f"{k}={v['status']}" for k, v in run["phases"].items())
        + f", {cases['with_failures']} with failures, {len(run['errors'])} errors"
    )
    summary = p.stdout[p.stdout.rfind("SUMMARY") :] if "SUMMARY" in p.stdout else p.stdout
    print(summary[-3000:])
    assert p.returncode == 0, p.stdout[-8000:] + p.stderr[-2000:]
    assert run["failures"] == [] and run["errors"] == []
    assert run["operations"]["tested"] == run["operations"]["total"] == 9
    for name in ("examples", "coverage", "fuzzing", "stateful"):
        assert run["phases"][name]["status"] == "success", (name, run["phases"])
    assert cases["generated"] >= MIN_CASES
