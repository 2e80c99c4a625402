"""A second provisioning of the running VMs changes nothing (the roles are idempotent)."""

from __future__ import annotations

from tests.support.ansible import not_clean, parse_recap
from tests.support.model import TOPO
from tests.support.run import REPO, run

LOG = REPO / "artifacts" / "vagrant" / "second-provision.log"


def test_parse_recap() -> None:
    out = "PLAY RECAP ****\nlb    : ok=12   changed=0    unreachable=0    failed=0    skipped=3\n"
    assert parse_recap(out) == {"lb": {"ok": 12, "changed": 0, "unreachable": 0, "failed": 0}}


def test_second_vagrant_provision_changes_nothing() -> None:
    # Exactly what a user types: Vagrant's own Ansible provisioner, all machines.
    result = run(["vagrant", "provision"], check=False, timeout=3600)
    out = result.stdout + result.stderr
    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.write_text(out)
    # The recap alone hides why a host was unreachable: show the fatal lines first.
    fatal = "\n".join(line for line in out.splitlines() if line.startswith(("fatal:", "[ERROR]")))
    assert result.returncode == 0, f"{fatal[:4000]}\n...\n{out[-2000:]}\n(whole output: {LOG.relative_to(REPO)})"
    recap = parse_recap(out)
    assert set(recap) == {n.name for n in TOPO.nodes}, out[-4000:]
    changed = not_clean(recap)
    print("\nsecond provisioning recap: " + ", ".join(f"{h} ok={r['ok']} changed={r['changed']}" for h, r in recap.items()))
    assert not changed, f"not idempotent: {changed}\n{out[-4000:]}"
