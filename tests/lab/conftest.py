"""Fixtures for the tests that drive the nspawn lab (they need root); the helpers are in tests/support/lab.py."""

from __future__ import annotations

import os

import pytest

from tests.support.lab import labctl

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


@pytest.fixture(scope="session")
def lab() -> None:
    """A running lab (booted if none is)."""
    labctl("up")
