"""The lab's state file: read from the first labctl's format, written back the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import state
from lab.errors import LabError
from lab.state import LabState, NodeState

MEM = "/sys/fs/cgroup/memory/process_api/4c98/halab"

# As the first labctl (lab/nodes.py) wrote it: json.dumps(..., indent=2, sort_keys=True).
OLD = {
    "bridge": "halab0",
    "cgroup_parents": [MEM, "/sys/fs/cgroup/systemd/halab", "/sys/fs/cgroup/unified/halab"],
    "image": "/var/cache/halab/images/d97daf42c6a89a52/rootfs",
    "ip_forward_before": "0",
    "nodes": {
        "app1": {
            "cgroups": [f"{MEM}/app1", "/sys/fs/cgroup/systemd/halab/app1", "/sys/fs/cgroup/unified/halab/app1"],
            "partitioned": False,
            "pid": 11703,
        },
        "mon": {"cgroups": [f"{MEM}/mon"], "partitioned": True, "pid": None},
    },
    "repo": "/work/main",
}


def test_an_old_state_file_reads_into_typed_records(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(OLD, indent=2, sort_keys=True))
    lab = state.load(path)
    assert lab is not None
    assert lab.repo == "/work/main" and lab.bridge == "halab0" and lab.ip_forward_before == "0"
    assert lab.cgroup_parents == OLD["cgroup_parents"]
    assert lab.nodes["app1"] == NodeState(pid=11703, cgroups=OLD["nodes"]["app1"]["cgroups"], partitioned=False)  # type: ignore[index]
    assert lab.nodes["mon"].pid is None and lab.nodes["mon"].partitioned


def test_saving_writes_the_old_format_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    text = json.dumps(OLD, indent=2, sort_keys=True)
    path.write_text(text)
    lab = state.load(path)
    assert lab is not None
    state.save(lab, path)
    assert path.read_text() == text
    assert not path.with_suffix(".tmp").exists()


def test_a_partial_state_reads_with_defaults() -> None:
    lab = LabState.from_json({"nodes": {"lb": {"pid": 12}}})
    assert lab.cgroup_parents is None and lab.ip_forward_before is None and lab.bridge is None
    assert lab.node("lb") == NodeState(pid=12)
    assert lab.node("nosuch") == NodeState()  # an empty record, not stored
    assert "nosuch" not in lab.nodes
    assert set(lab.to_json()) == {"image", "nodes"}  # what was never recorded is not invented


def test_no_state_file_is_no_lab(tmp_path: Path) -> None:
    assert state.load(tmp_path / "state.json") is None


def test_a_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(LabError, match="unreadable"):
        state.load(path)
