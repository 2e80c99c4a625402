"""How the failover tests look at a provisioned system, whichever route built it.

A route (the nspawn lab, the Vagrant VMs) only says how to run a command as
root on a node; everything else (an instance's own status through its
management plane, whether NGINX routes to it, the stored todos) is the same.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from typing import Any, Protocol

import httpx

from tests.failover.loadgen import LoadRun

from .model import INSTANCE_NODE, PUBLIC_URL
from .wait import wait_until


class OnNode(Protocol):
    """A route's way to run a command as root on a node."""

    def __call__(self, node: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]: ...


class Probes:
    """Read-only looks at the system; `http_timeout` grows for slow (emulated) nodes."""

    def __init__(self, on_node: OnNode, http_timeout: float = 5.0) -> None:
        self.on_node = on_node
        self.http_timeout = http_timeout

    def on_instance(self, instance: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.on_node(INSTANCE_NODE[instance], command, check=check)

    def instance_status(self, instance: str) -> dict[str, Any]:
        """The instance's own view, through its management plane on the node."""
        out = self.on_instance(instance, f"todo-apictl --instance {instance} status", check=False).stdout
        return dict(json.loads(out)) if out.strip().startswith("{") else {}

    def instance_healthy(self, instance: str) -> bool:
        return bool(self.instance_status(instance).get("health", {}).get("status") == "OK")

    def serves_through_lb(self, instance: str, tries: int = 10) -> bool:
        with httpx.Client(base_url=PUBLIC_URL, timeout=self.http_timeout) as client:
            return any(client.get("/api/todos").headers.get("x-instance") == instance for _ in range(tries))

    def all_todos(self) -> list[dict[str, Any]]:
        for _ in range(60):
            try:
                response = httpx.get(f"{PUBLIC_URL}/api/todos", timeout=self.http_timeout)
                if response.status_code == 200:
                    return list(response.json())
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("could not list the todos through the load balancer")

    def forget(self, todo_ids: set[str]) -> None:
        """Delete a run's todos once checked: GET /api/todos returns every todo,
        so a list grown by each scenario would slow every later one."""
        with httpx.Client(base_url=PUBLIC_URL, timeout=self.http_timeout) as client:
            for todo_id in todo_ids:
                for _ in range(3):
                    try:
                        if client.delete(f"/api/todos/{todo_id}").status_code in (204, 404):
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.2)

    def settle(self, run: LoadRun, name: str, instance: str | None, recover: str | None = "recover") -> dict[str, Any]:
        """Once the load has ended: its row, with every acknowledged todo checked
        (lost, stored twice); then the run's todos are deleted."""
        run.wait()
        lost, duplicated = run.check_todos(self.all_todos())
        row = run.report(name, lost, duplicated, instance=instance, recover=recover)
        self.forget({a.id for a in run.acknowledged})
        return row

    def all_healthy(self, timeout: float) -> None:
        for instance in INSTANCE_NODE:
            wait_until(f"instance {instance} healthy", partial(self.instance_healthy, instance), timeout=timeout)

    def both_healthy_around(self, timeout: float = 120) -> Iterator[None]:
        """A scenario starts, and leaves, every instance healthy and in rotation."""
        self.all_healthy(timeout)
        yield
        for instance in INSTANCE_NODE:
            if self.instance_status(instance).get("stress", {}).get("allocatedMB"):
                self.on_instance(instance, f"todo-apictl --instance {instance} clear", check=False)
            wait_until(f"instance {instance} healthy again", partial(self.instance_healthy, instance), timeout=timeout)
            wait_until(f"instance {instance} back in rotation", partial(self.serves_through_lb, instance), timeout=timeout)


def assert_unharmed(row: dict[str, Any], run: LoadRun) -> None:
    """No client saw a failure; no acknowledged todo was lost or stored twice."""
    failures = [(o.method, o.status, o.error, o.attempts) for o in run.failures()[:10]]
    assert row["failures"] == 0, f"{row['failures']} client-visible failures, e.g. {failures}"
    assert row["lost"] == 0, f"{row['lost']} acknowledged todos lost"
    assert row["duplicated"] == 0, f"{row['duplicated']} todos stored twice"
