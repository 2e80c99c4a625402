from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_v1_tree, write_v2_tree
from todo_api.cgroup import MB, MemoryMonitor, locate, parse_proc_self_cgroup, read_memory


def reading(root: Path, proc: Path, fallback_mb: int = 512, rss: int = 10 * MB) -> Any:
    return read_memory(locate(str(root), str(proc)), fallback_mb * MB, rss)


def test_parse_proc_self_cgroup_hybrid() -> None:
    text = "9:name=systemd:/\n4:memory:/process_api/abc\n3:cpuset:/\n0::/\n"
    assert parse_proc_self_cgroup(text) == ("/", "/process_api/abc")
    assert parse_proc_self_cgroup("0::/system.slice/todo-api@1.service\n") == (
        "/system.slice/todo-api@1.service",
        None,
    )


@pytest.mark.parametrize(
    ("write", "source"), [(write_v2_tree, "cgroup-v2"), (write_v1_tree, "cgroup-v1")]
)
def test_limit_and_inactive_file_discounted(
    tmp_path: Path, write: Callable[..., Path], source: str
) -> None:
    # v2 discounts memory.stat's inactive_file, v1 its total_inactive_file
    root = tmp_path / "cg"
    proc = write(root, 450 * MB, 512 * MB, 20 * MB)
    r = reading(root, proc)
    assert (r.source, r.limit_bytes, r.used_bytes) == (source, 512 * MB, 430 * MB)
    assert round(r.percent, 2) == round(430 / 512 * 100, 2)


def test_v2_unlimited_falls_back_to_rss(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = write_v2_tree(root, current=300 * MB, limit="max")
    r = reading(root, proc, fallback_mb=200, rss=50 * MB)
    assert (r.source, r.limit_bytes, r.used_bytes) == ("fallback", 200 * MB, 50 * MB)


def test_v1_unlimited_huge_number_falls_back(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = write_v1_tree(root, usage=450 * MB, limit=9223372036854771712)
    r = reading(root, proc, fallback_mb=512, rss=30 * MB)
    assert r.source == "fallback"
    assert r.used_bytes == 30 * MB


def test_no_cgroup_at_all(tmp_path: Path) -> None:
    r = reading(tmp_path / "none", tmp_path / "missing")
    assert r.source == "fallback"


def test_monitor_caches_reading(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = write_v2_tree(root, current=100 * MB, limit=512 * MB)
    m = MemoryMonitor(str(root), str(proc), 512, 80, ttl=60)
    first = m.read()
    (root / "system.slice/x/memory.current").write_text(f"{500 * MB}\n")
    assert m.read() is first  # cached
    m.invalidate()
    assert m.read().used_bytes == 500 * MB
    assert m.over_threshold()
    assert m.threshold_bytes(m.read()) == 512 * MB * 0.8
