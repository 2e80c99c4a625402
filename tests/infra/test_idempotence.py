"""A second converge changes nothing. Slow (a full site.yml run): select with -m idempotence.
molecule test runs its own idempotence step instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.idempotence
def test_site_second_run_changes_nothing(request):
    inv = request.config.getoption("ansible_inventory")
    bin_dir = Path(sys.executable).parent
    res = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", inv, "playbooks/site.yml"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", res.stdout, re.M)
    assert recap, res.stdout[-2000:]
    assert {h: int(c) for h, c in recap if int(c)} == {}
