"""How the failover tests look at a provisioned system, whichever route built it.

A route (the nspawn lab, the Vagrant VMs) only says how to run a command as
root on a node; everything else (an instance's own status through its
management plane, whether NGINX routes to it, the stored todos) is the same.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Generator, Iterator, Sequence
from functools import partial
from typing import Any, Protocol

import httpx

from tests.failover.loadgen import TLS, LoadRun

from .model import INSTANCE_NODE, LOADBALANCER_GROUP, PUBLIC_URL, REDIS_GROUP, TOPO
from .wait import wait_until

# GET /api/todos answers at most this many todos a page (the API's maximum); the
# rest follows the page's `Link: <...>; rel="next"`.
PAGE_MAX = 500
# The operators' Redis user and its password file on the Redis node (roles/redis:
# redis_admin_user, redis_admin_password_file; root only).
REDIS_ADMIN_USER = "admin"
REDIS_ADMIN_PASSWORD_FILE = "/etc/redis/admin.password"
# redis-cli prints an error reply and may still exit 0.
REDIS_ERRORS = ("ERR", "(error)", "NOPERM", "NOAUTH", "WRONGPASS", "WRONGTYPE", "NOSCRIPT", "BUSY", "OOM")


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
        with httpx.Client(base_url=PUBLIC_URL, timeout=self.http_timeout, verify=TLS) as client:
            return any(client.get("/api/todos?limit=1").headers.get("x-instance") == instance for _ in range(tries))

    def pages(self, order: str = "newest", limit: int = PAGE_MAX) -> Generator[list[dict[str, Any]], None, None]:
        """The stored todos through the load balancer, a page at a time, following
        each page's `Link: <...>; rel="next"` (a relative URL) to the end."""
        url: str | None = f"/api/todos?limit={limit}&order={order}"
        with httpx.Client(base_url=PUBLIC_URL, timeout=self.http_timeout, verify=TLS) as client:
            while url:
                response = self._page(client, url)
                yield list(response.json())
                url = response.links.get("next", {}).get("url")

    @staticmethod
    def _page(client: httpx.Client, url: str) -> httpx.Response:
        for _ in range(60):
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return response
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"could not list the todos through the load balancer ({url})")

    def newest(self, limit: int = PAGE_MAX) -> list[dict[str, Any]]:
        """The newest todos, one page."""
        with contextlib.closing(self.pages(limit=limit)) as pages:
            return next(pages)

    def all_todos(self) -> list[dict[str, Any]]:
        """Every stored todo, newest first (every page)."""
        return [todo for page in self.pages() for todo in page]

    def todos_of(self, runs: Sequence[LoadRun]) -> list[dict[str, Any]]:
        """Every stored todo the runs wrote (their tag in texto), duplicates included.

        Newest first, page by page, and no further than needed: the runs' todos
        were created in one window (nothing else writes meanwhile) and sort
        together; once every acknowledged one has been seen and a whole page
        holds none of theirs, the rest is older (e.g. 200,000 seeded todos).
        Until every acknowledged todo is seen, it reads to the end: a lost one
        is looked for everywhere.
        """
        prefixes = tuple(f"load {run.tag} " for run in runs)
        acknowledged = {a.id for run in runs for a in run.acknowledged}
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        for page in self.pages():
            theirs = [t for t in page if str(t["texto"]).startswith(prefixes)]
            found += theirs
            seen |= {str(t["id"]) for t in theirs}
            if not theirs and acknowledged <= seen:
                break
        return found

    def forget(self, todo_ids: set[str]) -> None:
        """Delete a run's todos once checked: a list grown by each scenario
        would only make the next check read further."""
        with httpx.Client(base_url=PUBLIC_URL, timeout=self.http_timeout, verify=TLS) as client:
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
        return self.settle_all([run], name, instance, recover)[0]

    def settle_all(
        self, runs: Sequence[LoadRun], name: str, instance: str | None, recover: str | None = "recover"
    ) -> list[dict[str, Any]]:
        """settle() for runs that loaded the system together (one row each): one
        read of the stored todos for all of them, then every todo they stored is
        deleted (duplicates and unacknowledged ones too)."""
        for run in runs:
            run.wait()
        stored = self.todos_of(runs)
        rows = []
        for run in runs:
            lost, duplicated = run.check_todos(stored)
            others = [r for r in runs if r is not run]
            rows.append(run.report(name, lost, duplicated, instance=instance, recover=recover, together=others))
        self.forget({str(t["id"]) for t in stored} | {a.id for run in runs for a in run.acknowledged})
        return rows

    def redis_role(self, node: str) -> str:
        """What the Redis on `node` says it is (ROLE): master, slave, or '' when it does not answer."""
        result = self.on_node(node, self.redis_cli_command("ROLE"), check=False, timeout=30)
        lines = result.stdout.split()
        return lines[0] if result.returncode == 0 and lines else ""

    def replica_linked(self, node: str) -> bool:
        """The Redis on `node` is a replica and its link to the primary is up."""
        info = self.on_node(node, self.redis_cli_command("INFO replication"), check=False).stdout
        return "role:slave" in info and "master_link_status:up" in info

    def redis_primary(self) -> str:
        """The node whose Redis is the primary now (a failover moves it; with one Redis
        node, that one)."""
        nodes = [n.name for n in TOPO.group(REDIS_GROUP)]
        if len(nodes) == 1:
            return nodes[0]
        primaries = [n for n in nodes if self.redis_role(n) == "master"]
        assert len(primaries) == 1, f"Redis primaries: {primaries} (of {nodes})"
        return primaries[0]

    def redis_node(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command as root on the Redis primary's node."""
        return self.on_node(self.redis_primary(), command, check=check, timeout=timeout)

    @staticmethod
    def redis_cli_command(args: str) -> str:
        """The shell command that runs redis-cli with `args` as the operators' user (on a data node)."""
        return (
            f'REDISCLI_AUTH="$(cat {REDIS_ADMIN_PASSWORD_FILE})" redis-cli --user {REDIS_ADMIN_USER} --no-auth-warning '
            f"-p {TOPO.services.port('redis')} {args}"
        )

    @staticmethod
    def sentinel_cli_command(args: str, host: str = "127.0.0.1") -> str:
        """The shell command that runs redis-cli with `args` against the Sentinel on a
        Sentinel's node, with its password read from its own config there."""
        return (
            "REDISCLI_AUTH=\"$(awk '$1 == \"requirepass\" {print $2}' /etc/redis/sentinel.conf | tr -d '\\\"')\" "
            f"redis-cli --no-auth-warning -h {host} -p {TOPO.services.port('redis_sentinel')} {args}"
        )

    def redis_admin(
        self, args: str, feed: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """redis-cli on the Redis node as the operators' user (its password read
        there, never here). `args` are redis-cli's, as a shell string (`--json
        SLOWLOG GET 128`, `... > FILE 2>&1 &`); `feed`, a shell command run on the
        node whose output redis-cli reads as commands, one a line, each answered
        before the next (batches: no single command holds Redis long).
        With `check`, an error reply fails the test too (redis-cli may exit 0)."""
        command = self.redis_cli_command(args)
        if feed:
            command = f"{{ {feed} ; }} | {command}"
        result = self.redis_node(command, check=check, timeout=timeout)
        if check and any(line.lstrip().startswith(REDIS_ERRORS) for line in result.stdout.splitlines()):
            raise AssertionError(f"redis-cli {args[:200]!r} answered an error:\n{result.stdout[-2000:]}\n{result.stderr[-1000:]}")
        return result

    def redis_stalls(self) -> str:
        """What held Redis longer than its latency monitor's threshold (LATENCY LATEST),
        one event a line: a printed figure beside the rows, and the first suspect when
        an instance answered "storage unavailable" while Redis ran."""
        result = self.redis_admin("LATENCY LATEST", check=False, timeout=30)
        fields = result.stdout.split()
        if result.returncode or len(fields) % 4:
            return f"LATENCY LATEST unreadable: {(result.stdout + result.stderr).strip()[:300]}"
        events = [fields[i : i + 4] for i in range(0, len(fields), 4)]
        return "\n".join(f"{name}: latest {latest} ms, max {peak} ms" for name, _, latest, peak in events) or "none"

    def trace(self, request_ids: Sequence[str], minutes: int = 15) -> str:
        """Where requests went: their lines in every load balancer's access log and every API
        instance's journal (NGINX's X-Request-ID, the API's requestId), then the instances'
        errors of the last `minutes`. What a failed assertion shows, so a failure a CI log
        reports once can be explained from that log alone."""
        lines = []
        # NGINX's ids are 32 hex digits: nothing else goes into the shell's pattern
        pattern = "|".join(i for i in request_ids if re.fullmatch(r"[0-9a-f]{1,64}", i))
        for node in [n.name for n in TOPO.group(LOADBALANCER_GROUP)] if pattern else []:
            found = self.on_node(node, f"grep -hE '{pattern}' /var/log/nginx/halab_access.json", check=False)
            lines += [f"{node} access: {line}" for line in found.stdout.splitlines()]
        journal = f"journalctl -u 'todo-api@*' --since '-{minutes} min' --no-pager -o cat"
        for node in sorted(set(INSTANCE_NODE.values())):
            if pattern:
                found = self.on_node(node, f"{journal} | grep -E '{pattern}'", check=False)
                lines += [f"{node} journal: {line}" for line in found.stdout.splitlines()]
            errors = self.on_node(node, f"{journal} -p err | tail -n 5", check=False)
            lines += [f"{node} error: {line}" for line in errors.stdout.splitlines()]
        head = f"requests {', '.join(request_ids)}" if request_ids else "no request id (no answer at all)"
        return "\n".join([f"trace of {head}:", *(line[:400] for line in lines or ["nothing found"])])

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
