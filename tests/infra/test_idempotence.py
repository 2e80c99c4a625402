"""A second converge changes nothing. Slow (a full site.yml run): select with -m idempotence.
molecule test runs its own idempotence step instead."""

from __future__ import annotations

import pytest

from tests.support.ansible import not_clean, parse_recap, playbook


@pytest.mark.idempotence
def test_site_second_run_changes_nothing(request: pytest.FixtureRequest) -> None:
    res = playbook("site.yml", inventory=request.config.getoption("ansible_inventory"), check=False, timeout=3600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    recap = parse_recap(res.stdout)
    assert recap, res.stdout[-2000:]
    assert not_clean(recap) == {}
