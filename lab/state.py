"""What a running lab changed on the host, kept in STATE_FILE so that `down`
(from any clone) can undo it.

The file is JSON, written by `up` and by the fault verbs:

    {"repo": "/path/to/clone", "bridge": "halab0", "ip_forward_before": "0",
     "cgroup_parents": ["/sys/fs/cgroup/memory/.../halab", ...],
     "image": "/var/cache/halab/images/<key>/rootfs",
     "nodes": {"lb": {"pid": 1234, "cgroups": [".../halab/lb", ...], "partitioned": false}, ...}}

Its keys and layout are those of the first labctl (a lab started by an older
checkout is read, and taken down, by this one), and tests read it as plain JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import die
from .paths import STATE_FILE


@dataclass
class NodeState:
    pid: int | None = None  # the node's systemd-nspawn process; None once stopped
    cgroups: list[str] = field(default_factory=list)  # one directory per cgroup hierarchy
    partitioned: bool = False

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> NodeState:
        pid = raw.get("pid")
        return cls(
            pid=int(pid) if pid else None,
            cgroups=[str(c) for c in raw.get("cgroups") or []],
            partitioned=bool(raw.get("partitioned", False)),
        )


@dataclass
class LabState:
    repo: str | None = None  # the clone that started the lab
    bridge: str | None = None
    ip_forward_before: str | None = None  # put back by `down`
    cgroup_parents: list[str] | None = None  # None: not recorded, `down` computes them
    image: str = ""  # the overlay's lower directory
    nodes: dict[str, NodeState] = field(default_factory=dict)

    def node(self, name: str) -> NodeState:
        """The node's record (an empty one, not stored, when it has none)."""
        return self.nodes.get(name, NodeState())

    def to_json(self) -> dict[str, Any]:
        # Keys that were never recorded stay out, as they did in the first format.
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LabState:
        parents = raw.get("cgroup_parents")
        return cls(
            repo=raw.get("repo"),
            bridge=raw.get("bridge"),
            ip_forward_before=raw.get("ip_forward_before"),
            cgroup_parents=None if parents is None else [str(p) for p in parents],
            image=str(raw.get("image", "")),
            nodes={name: NodeState.from_json(info or {}) for name, info in (raw.get("nodes") or {}).items()},
        )


def load(path: Path = STATE_FILE) -> LabState | None:
    """The running lab's state, or None when there is no lab."""
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return LabState.from_json(raw)
    except (ValueError, TypeError, AttributeError) as exc:
        die(
            f"the lab's state file {path} is unreadable ({exc})",
            hint="it records what `labctl up` changed on the host (bridge, mounts, cgroups): repair it, or undo those by hand",
        )


def save(state: LabState, path: Path = STATE_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True))
    tmp.replace(path)
