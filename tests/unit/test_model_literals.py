"""No value of the system model is typed outside it.

topology.yml holds every address, port and the management socket path once;
everything else reads them (lab.topology in Python, the halab_model plugins in
Ansible). This check greps the tracked tree for those values and fails on any
file that types one. It reads the values from the model itself, so a new port
or node in topology.yml is checked without touching this test.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from lab import topology

REPO = Path(__file__).resolve().parents[2]

# Where a model value may appear, and why.
ALLOWED = {
    "topology.yml": "the model itself",
    "lab/topology.py": "the model's code (its docstrings name the file's keys)",
    # The API is a service of its own that runs without the lab: its defaults are its
    # contract (TODO_API_PORT, the management socket), and its tests test those defaults.
    # The lab always sets them from the model (roles/todo_api/templates/instance.env.j2).
    "app/": "the API's own defaults and their tests",
}
DOC_SUFFIXES = (".md", ".png")


def model_literals(topo: topology.Topology) -> dict[str, re.Pattern[str]]:
    """Each model value as a pattern that does not match inside a longer token."""
    values: dict[str, re.Pattern[str]] = {}
    addresses = [n.address for n in topo.nodes] + [f.address for f in topo.floating] + [topo.gateway]
    for address in addresses:
        values[address] = re.compile(rf"(?<![\d.]){re.escape(address)}(?![\d])")
    values[str(topo.network)] = re.compile(re.escape(str(topo.network)))
    for name, port in topo.services.ports.items():
        if port >= 1024:  # 80 and 22-like numbers are everywhere (percentages, sizes) and prove nothing
            values[f"port {name}"] = re.compile(rf"(?<![\w.-]){port}(?![\w])")
    prefix, _, suffix = topo.services.management_socket.partition("{instance}")
    values["management socket"] = re.compile(re.escape(prefix) + r".{1,40}?" + re.escape(suffix))
    values["balancer state file"] = re.compile(re.escape(topo.services.balancer_state_file))
    return values


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    files = []
    for name in filter(None, out.split("\0")):
        path = REPO / name
        if path.is_symlink() or not path.is_file() or name.endswith(DOC_SUFFIXES):
            continue
        if any(name == allowed or (allowed.endswith("/") and name.startswith(allowed)) for allowed in ALLOWED):
            continue
        files.append(path)
    return files


def test_no_model_value_is_typed_outside_the_model() -> None:
    patterns = model_literals(topology.load())
    found = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            where = f"{path.relative_to(REPO)}:{lineno}"
            found += [f"{where}: {what}: {line.strip()[:100]}" for what, p in patterns.items() if p.search(line)]
    hint = "model values typed outside topology.yml (read them from lab.topology or the halab_model plugins)"
    assert not found, hint + ":\n" + "\n".join(found)


def test_the_check_finds_a_typed_value(tmp_path: Path) -> None:
    """The patterns catch what they must (and not a longer number that merely contains one)."""
    topo = topology.load()
    patterns = model_literals(topo)
    api = topo.instances[0]
    assert patterns[api.address].search(f"url: http://{api.address}:80/")
    assert patterns["port todo_api"].search(f"port: {api.port}")
    assert not patterns["port todo_api"].search(f"size: 1{api.port}")
    assert patterns["management socket"].search(f"argv: [curl, --unix-socket, {api.socket}]")
    assert patterns["management socket"].search(topo.services.management_socket.replace("{instance}", "{{ item }}"))
