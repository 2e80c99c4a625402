"""ansible-playbook runs, and what their PLAY RECAP says."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping

from .run import REPO, run, venv_tool

RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
RECAP_KEYS = ("ok", "changed", "unreachable", "failed")


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP of an ansible-playbook run: host -> ok/changed/unreachable/failed."""
    return {m[0]: dict(zip(RECAP_KEYS, map(int, m[1:]), strict=True)) for m in RECAP.findall(output)}


def not_clean(recap: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The hosts whose run changed, failed or did not reach something."""
    return {host: r for host, r in recap.items() if r["changed"] or r["failed"] or r["unreachable"]}


def playbook(
    name: str,
    *args: str,
    inventory: str | None = None,
    check: bool = True,
    timeout: float = 600,
    env_extra: Mapping[str, str] | None = None,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """playbooks/<name> with this venv's ansible-playbook and the repository's ansible.cfg.

    `args` go to ansible-playbook as they are (-l HOST ...), `extra` as -e key=value,
    `env_extra` into its environment (e.g. HALAB_TOPOLOGY).
    """
    cmd = [venv_tool("ansible-playbook"), *(["-i", inventory] if inventory else []), f"playbooks/{name}", *args]
    for key, value in extra.items():
        cmd += ["-e", f"{key}={value}"]
    return run(cmd, check=check, timeout=timeout, env=ansible_env(env_extra))


def ansible_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **os.environ, **(extra or {})}


def drain(balancer: str, hosts: list[str], timeout: float = 120) -> None:
    """Render `balancer`'s upstream with `hosts` down (nginx_lb's `drain` entry point, as
    playbooks/rolling-restart.yml does; [] puts every host back) and reload NGINX."""
    cmd = [venv_tool("ansible"), balancer, "-m", "ansible.builtin.include_role", "-a", "name=nginx_lb tasks_from=drain"]
    run([*cmd, "-e", json.dumps({"nginx_lb_upstream_down": hosts})], timeout=timeout, env=ansible_env())
