"""The operator playbooks act on what -l and -e instance select, and refuse an empty selection.

Each case runs ansible-playbook against the lab, as an operator would. The stress case
allocates a small amount (well under the threshold) and the recover case frees it, so
the lab is left as it was.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support import ansible
from tests.support.model import API_GROUP, REDIS_GROUP, TOPO, instances_on

FIRST, SECOND = TOPO.instances[0], TOPO.instances[1]
NON_API_HOST = next(n.name for n in TOPO.nodes if API_GROUP not in n.groups)

pytestmark = pytest.mark.operator


def playbook(request: pytest.FixtureRequest, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    inventory = request.config.getoption("ansible_inventory")
    return ansible.playbook(f"{name}.yml", *args, inventory=inventory, check=False, timeout=300)


def reported_instances(out: str) -> set[int]:
    """Instance ids the playbook's report tasks named in their loop labels."""
    return {int(line.split("instance ")[1].split(")")[0]) for line in out.splitlines() if "(item=instance " in line}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-e", f"instance={FIRST.id}"], {FIRST.id}),
        (["-l", FIRST.host], {i.id for i in instances_on(FIRST.host)}),
        (["-l", SECOND.host, "-e", f"instance={SECOND.id}"], {SECOND.id}),
        ([], {i.id for i in TOPO.instances}),
    ],
    ids=["instance", "limit", "limit-and-instance", "all"],
)
def test_status_acts_on_the_selection(request: pytest.FixtureRequest, args: list[str], expected: set[int]) -> None:
    res = playbook(request, "status", *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert reported_instances(res.stdout) == expected, res.stdout[-3000:]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("status", ["-l", NON_API_HOST], "no API instance runs on the selected hosts"),
        ("status", ["-e", "instance=999"], "no API instance 999"),
        ("status", ["-l", FIRST.host, "-e", f"instance={SECOND.id}"], f"runs on {SECOND.host}, which is not among"),
        ("status", ["-e", "instance=one"], "takes an instance number"),
        ("stress", [], "say which instance"),
        ("recover", [], "say which instance"),
        ("stress", ["-l", NON_API_HOST], "no API instance runs on the selected hosts"),
        ("recover", ["-l", FIRST.host, "-e", f"instance={SECOND.id}"], "which is not among"),
    ],
)
def test_an_empty_or_wrong_selection_fails_clearly(
    request: pytest.FixtureRequest, name: str, args: list[str], message: str
) -> None:
    res = playbook(request, name, *args)
    assert res.returncode != 0, res.stdout[-3000:]
    assert message in res.stdout + res.stderr, res.stdout[-3000:]
    assert "todo-apictl" not in res.stdout, "it acted although the selection was refused"


def test_stress_and_recover_with_a_limit(request: pytest.FixtureRequest) -> None:
    """-l HOST, the operator's habit, stresses that host's instances and recovers them."""
    stressed = playbook(request, "stress", "-l", FIRST.host, "-e", "stress_mb=16")
    assert stressed.returncode == 0, stressed.stdout[-3000:] + stressed.stderr[-2000:]
    on_host = {i.id for i in instances_on(FIRST.host)}
    assert reported_instances(stressed.stdout) == on_host
    recovered = playbook(request, "recover", "-l", FIRST.host)
    assert recovered.returncode == 0, recovered.stdout[-3000:] + recovered.stderr[-2000:]
    assert reported_instances(recovered.stdout) == on_host


@pytest.mark.skipif(len(TOPO.group(REDIS_GROUP)) < 2, reason="one Redis node: no replication to report")
@pytest.mark.parametrize("name", ["redis-status", "status"])
def test_redis_status_names_one_primary_that_every_sentinel_agrees_on(request: pytest.FixtureRequest, name: str) -> None:
    """redis-status.yml, alone and at the end of status.yml: one data node reports itself the
    primary, the others its linked replicas, and the Sentinels name that primary as one."""
    res = playbook(request, name)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    roles = re.findall(r'"role": "(\w+)"', res.stdout)
    assert sorted(roles) == ["master"] + ["slave"] * (len(TOPO.group(REDIS_GROUP)) - 1), res.stdout[-3000:]
    assert re.findall(r'"link": "(\S+)"', res.stdout).count("up") == len(roles) - 1, res.stdout[-3000:]
    agreed = re.search(r"primary (\S+):(\d+), named by every Sentinel that answers", res.stdout)
    assert agreed, res.stdout[-3000:]
    assert agreed.group(1) in {n.address for n in TOPO.group(REDIS_GROUP)}


def test_plain_ssh_from_the_host_reaches_an_instances_unit() -> None:
    """The README's `ssh app1 systemctl is-active todo-api@1`, with the first instance's node."""
    result = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", FIRST.host, "systemctl", "is-active", f"todo-api@{FIRST.id}"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.stdout.strip() == "active", result.stderr
