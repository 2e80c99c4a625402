"""Stopping a node for sure: node.reap against a fake process table and a fake clock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import host, node
from lab.errors import LabError
from lab.node import KILL_TIMEOUT, HostProcesses, Proc
from lab.state import NodeState

RECORD = NodeState(pid=None, cgroups=["/cg/memory/halab/mon", "/cg/unified/halab/mon"])
VETH = node.veth_name("mon")


class FakeHost:
    """Processes that die after `lives` SIGKILLs (None: never), children forked on a kill, links."""

    def __init__(self, procs: dict[int, str], lives: dict[int, int | None] | None = None, veth: bool = True) -> None:
        self.procs = dict(procs)
        self.lives: dict[int, int | None] = {pid: 1 for pid in procs}
        self.lives.update(lives or {})
        self.links = {VETH} if veth else set()
        self.sticky_links: set[str] = set()
        self.forks: dict[int, tuple[int, str]] = {}  # on its first SIGKILL, pid forks a child first
        self.killed: list[int] = []
        self.asked: list[list[str]] = []

    def members(self, cgroups: list[str]) -> list[Proc]:
        self.asked.append(cgroups)
        return [Proc(pid, comm) for pid, comm in sorted(self.procs.items())]

    def process(self, pid: int) -> Proc | None:
        return Proc(pid, self.procs[pid]) if pid in self.procs else None

    def kill(self, pid: int) -> None:
        self.killed.append(pid)
        if pid in self.forks:
            child, comm = self.forks.pop(pid)
            self.procs[child] = comm
            self.lives[child] = 1
        lives = self.lives[pid]
        if lives is not None:
            self.lives[pid] = lives - 1
            if lives <= 1:
                self.procs.pop(pid, None)

    def link_exists(self, name: str) -> bool:
        return name in self.links

    def delete_link(self, name: str) -> None:
        if name not in self.sticky_links:
            self.links.discard(name)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def reap(table: FakeHost, clock: Clock, timeout: float = KILL_TIMEOUT) -> None:
    node.reap("mon", RECORD, table, timeout=timeout, clock=clock, sleep=clock.sleep)


def test_nothing_left_returns_at_once() -> None:
    table, clock = FakeHost({}, veth=False), Clock()
    reap(table, clock)
    assert table.killed == [] and clock.sleeps == 0
    assert table.asked == [RECORD.cgroups]


def test_every_process_is_killed_and_the_veth_pulled() -> None:
    table, clock = FakeHost({100: "systemd", 120: "sshd", 130: "systemd-nspawn"}), Clock()
    reap(table, clock)
    assert sorted(table.killed) == [100, 120, 130]
    assert not table.procs and not table.links


def test_a_process_forked_while_killing_is_killed_in_the_next_round() -> None:
    table, clock = FakeHost({100: "systemd"}), Clock()
    table.forks[100] = (101, "apt-get")
    reap(table, clock)
    assert table.killed == [100, 101]
    assert not table.procs


def test_a_slow_process_is_killed_again_until_it_goes() -> None:
    # In uninterruptible sleep, a process outlives a few SIGKILLs; it is not reported gone until it is.
    table, clock = FakeHost({100: "systemd", 200: "dpkg"}, lives={200: 5}), Clock()
    reap(table, clock)
    assert table.killed.count(200) == 5
    assert 0 < clock.now < KILL_TIMEOUT


def test_a_process_that_never_dies_fails_loudly_with_pid_and_name() -> None:
    table, clock = FakeHost({100: "systemd", 200: "dpkg"}, lives={200: None}), Clock()
    with pytest.raises(LabError) as err:
        reap(table, clock)
    text = str(err.value)
    assert "mon did not stop within 30 s" in text
    assert "200 (dpkg)" in text and "100 (systemd)" not in text
    assert "its veth is gone" in text
    assert "ps -o pid,stat,wchan:32,cmd -p 200" in text
    assert clock.now >= KILL_TIMEOUT
    assert table.killed.count(200) > 100  # killed again on every round until the timeout


def test_a_veth_that_stays_fails_loudly_too() -> None:
    table, clock = FakeHost({}), Clock()
    table.sticky_links.add(VETH)
    with pytest.raises(LabError, match=f"processes still alive: none; its veth {VETH} still exists"):
        reap(table, clock, timeout=2)


def test_the_timeout_bounds_the_wait() -> None:
    table, clock = FakeHost({1: "init"}, lives={1: None}), Clock()
    with pytest.raises(LabError, match="within 3 s"):
        reap(table, clock, timeout=3)
    assert 3 <= clock.now < 3 + 2 * node.POLL


def test_the_real_table_skips_zombies_and_names_processes() -> None:
    table = HostProcesses()
    me = table.process(os.getpid())
    assert me is not None and me.comm == Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while table.process(child.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # exited but not waited for: a zombie, nothing of it runs
    assert table.process(child.pid) is None
    child.wait()
    assert table.process(child.pid) is None


def test_cgroup_members_are_read_from_every_level(tmp_path: Path) -> None:
    (tmp_path / "payload" / "system.slice").mkdir(parents=True)
    (tmp_path / "cgroup.procs").write_text("")
    (tmp_path / "payload" / "cgroup.procs").write_text("11\n12\n")
    (tmp_path / "payload" / "system.slice" / "cgroup.procs").write_text("13\n")
    assert host.cgroup_pids([tmp_path, tmp_path / "gone"]) == {11, 12, 13}
