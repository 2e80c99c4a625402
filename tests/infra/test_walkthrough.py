"""The README's lab sections ("Access and credentials", "Break it"), run as typed, and the
page's repair steps.

Each ```sh block of those sections runs in a fresh bash (-e, pipefail) from the repository's
root, after the first block (the venv's activation, as a reader's shell has it) and
with none of the test's own environment tricks: no venv on PATH, no ANSIBLE_CONFIG. Between
blocks the test waits until the lab is whole again, as the README tells the reader to. Only on
the nspawn lab: the commands name its tools (lab/labctl) and its addresses.
"""

from __future__ import annotations

import os
import re
import subprocess
from functools import partial
from pathlib import Path

import pytest

from tests.support.lab import lab_is_up, lab_nodes, on_node
from tests.support.model import INSTANCE_NODE, REDIS_GROUP, TOPO
from tests.support.probes import Probes
from tests.support.run import REPO, VENV_BIN
from tests.support.wait import wait_until

PROBES = Probes(on_node)
SECTIONS = ("## Access and credentials", "## Break it")
ACTIVATE = ". .venv/bin/activate"
# Bounds for one block (rolling-restart.yml is the longest) and for the lab to be whole again.
BLOCK_SECONDS = 900
WHOLE_SECONDS = 180

pytestmark = [pytest.mark.disruptive]


@pytest.fixture(scope="module", autouse=True)
def on_the_nspawn_lab(request: pytest.FixtureRequest) -> None:
    lab_inventory = (REPO / "inventory" / "lab" / "hosts.yml").resolve()
    given = request.config.getoption("ansible_inventory")
    # `make infra` passes it relative, Molecule's verify absolute: the same file either way
    if not lab_is_up() or not given or Path(given).resolve() != lab_inventory:
        pytest.skip("the README's commands are the nspawn lab's")


def readme_blocks(sections: tuple[str, ...] = SECTIONS) -> list[str]:
    """The ```sh blocks of these README sections, in order."""
    text = (REPO / "README.md").read_text()
    blocks = []
    for section in sections:
        start = text.index(f"\n{section}\n")
        end = text.find("\n## ", start + 1)
        body = text[start : end if end != -1 else len(text)]
        blocks += re.findall(r"^```sh\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL)
    return blocks


def a_readers_shell() -> dict[str, str]:
    """The environment of a root shell that has not activated the venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "ANSIBLE_CONFIG", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != str(VENV_BIN))
    return env


def run_as_typed(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=REPO,
        env=a_readers_shell(),
        capture_output=True,
        text=True,
        timeout=BLOCK_SECONDS,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def replica_linked() -> bool:
    """One data node the primary, the other its linked replica (one data node: nothing to link)."""
    nodes = [n.name for n in TOPO.group(REDIS_GROUP)]
    if len(nodes) < 2:
        return True
    roles = [PROBES.redis_role(n) for n in nodes]
    return sorted(roles) == ["master", "slave"] and PROBES.replica_linked(nodes[roles.index("slave")])


def lab_whole() -> None:
    """Every node running and on the network, every instance healthy and served, Redis replicated."""
    wait_until("every node running", lambda: all(row["state"] == "running" for row in lab_nodes()), timeout=WHOLE_SECONDS)
    PROBES.all_healthy(WHOLE_SECONDS)
    for instance in INSTANCE_NODE:
        wait_until(f"instance {instance} in rotation", partial(PROBES.serves_through_lb, instance), timeout=WHOLE_SECONDS)
    wait_until("a Redis primary with its replica linked", replica_linked, timeout=WHOLE_SECONDS)


BLOCKS = readme_blocks()


def test_the_sections_start_by_activating_the_venv() -> None:
    assert BLOCKS and BLOCKS[0].strip() == ACTIVATE, BLOCKS[:1]


FOLLOW = re.compile(r"^[^#\n]*\b(?:tail|journalctl|less)\b[^#\n]*\s(?:-f|-F|--follow|\+F)(?:\s|$)", re.MULTILINE)


def test_every_block_ends_by_itself() -> None:
    """A block that follows a log (tail -f, journalctl -f) never ends: run as typed, it would
    hold the test for BLOCK_SECONDS and fail on the timeout. The README shows the bounded form."""
    following = [m.group(0).strip() for block in BLOCKS for m in FOLLOW.finditer(block)]
    assert not following, f"these README commands follow a log and never end: {following}"


def test_the_activation_gives_the_projects_pinned_tools() -> None:
    """What the first block is for: after it, the shell runs the venv's Ansible (pinned in
    requirements/), not whatever the machine may have on its PATH."""
    result = run_as_typed(f"{ACTIVATE}\ncommand -v ansible-playbook")
    assert result.stdout.strip() == str(VENV_BIN / "ansible-playbook"), (result.stdout, result.stderr)


def block_id(index: int) -> str:
    """A block's test id: its first command, shortened."""
    return re.sub(r"[^a-z0-9.-]+", "-", BLOCKS[index].split("#")[0].strip().lower())[:40]


@pytest.mark.parametrize("index", range(1, len(BLOCKS)), ids=block_id)
def test_a_block_of_the_walkthrough_runs_as_typed(index: int) -> None:
    lab_whole()
    result = run_as_typed(f"{ACTIVATE}\n{BLOCKS[index]}")
    output = f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-2000:]}"
    assert result.returncode == 0, f"rc={result.returncode}\n{BLOCKS[index]}\n{output}"
    lab_whole()


def test_the_pages_repair_steps_run_as_typed() -> None:
    """The page's steps for a sick (UNHEALTHY) and a silent (DOWN) instance (roles/frontend: the
    controller's commands and the node's shell from its defaults, the node's own commands from
    app.js), filled in for the first instance as the page fills them."""
    defaults = (REPO / "roles" / "frontend" / "defaults" / "main.yml").read_text()
    app_js = (REPO / "roles" / "frontend" / "files" / "www" / "app.js").read_text()

    def default(name: str) -> str:
        found = re.search(rf"^{name}: (.+)$", defaults, flags=re.MULTILINE)
        assert found, f"roles/frontend/defaults/main.yml has no {name}"
        return found.group(1)

    on_node_steps = [
        "systemctl restart todo-api@${inst.id}",
        "todo-apictl --instance ${inst.id} clear",
        "journalctl -u todo-api@${inst.id} -n 50",
    ]
    for step in on_node_steps:
        assert f"`{step}`" in app_js, f"app.js no longer shows {step!r}: update this test with it"
    first = TOPO.instances[0]
    fill = {"{id}": str(first.id), "{node}": first.host, "${inst.id}": str(first.id)}

    def filled(template: str) -> str:
        for key, value in fill.items():
            template = template.replace(key, value)
        return template

    shell = filled(default("frontend_shell_command"))
    commands = [
        filled(default("frontend_recover_command")),
        filled(default("frontend_status_command")),
        filled(default("frontend_node_down_command")),
        *(f"{shell} {filled(step)}" for step in on_node_steps),
    ]
    lab_whole()
    for command in commands:
        result = run_as_typed(f"{ACTIVATE}\n{command}")
        assert result.returncode == 0, f"{command}: rc={result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        lab_whole()
