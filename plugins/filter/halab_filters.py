"""Filters that apply the system model's rules (lab/topology.py) inside Ansible."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.topology import api_instances


def halab_api_instances(
    hosts: Iterable[str], hostvars: Mapping[str, Any], base_port: int, socket_template: str
) -> list[dict[str, Any]]:
    """Each API instance of `hosts` (inventory order) as a dict: id, host, address, port, socket."""
    rows = []
    for host in hosts:
        hv = hostvars[host]
        rows.append((host, str(hv["halab_address"]), [int(i) for i in hv.get("todo_api_instances", [1])]))
    return [asdict(i) for i in api_instances(rows, int(base_port), str(socket_template))]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"halab_api_instances": halab_api_instances}
