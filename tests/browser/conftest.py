"""Fixtures for the page's browser test: a target (the lab's lb, or the local loopback stack) and
Debian's Chromium driven headless by Selenium through Debian's chromedriver (nothing downloaded).

HALAB_BROWSER_TARGET=lab (default): the system's public URL (tests/support/model.py), faults through the
management plane (`lab/labctl ssh app1 -- todo-apictl --instance 1 stress`).
HALAB_BROWSER_TARGET=local: tests/browser/local_stack.py on 127.0.0.1 (no lab needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import on_node
from tests.support.model import INSTANCE_NODE, LOADBALANCER_GROUP, PUBLIC_URL, TOPO
from tests.support.run import REPO

ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM = os.environ.get("HALAB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HALAB_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
]


@dataclass
class Target:
    url: str
    node_of: dict[str, str]  # instance -> node (for messages)
    apictl: Callable[[str, str], subprocess.CompletedProcess[str]]  # (instance, verb): todo-apictl on its node
    balancers: list[str]  # the load balancers the page must show, in the model's order
    public_address: str  # the floating address the MASTER holds
    # Loopback only: the stand-in of keepalived's notify hook (a state, or None: no state file).
    # On the lab keepalived writes the file; the tests never fake it there.
    set_balancer_state: Callable[[str | None], None] | None = None
    # The lab only: (instance, "stop" | "start") its systemd unit on its node.
    unit: Callable[[str, str], subprocess.CompletedProcess[str]] | None = None


def _lab_target() -> Target:
    url = os.environ.get("HALAB_URL", f"{PUBLIC_URL}/")
    try:
        urllib.request.urlopen(url + "config.json", timeout=5).read()
    except (urllib.error.URLError, OSError) as exc:
        pytest.skip(f"the lab's page does not answer at {url}config.json ({exc}): provision the lab first (make lab)")

    def apictl(instance: str, verb: str) -> subprocess.CompletedProcess[str]:
        return on_node(INSTANCE_NODE[instance], f"todo-apictl --instance {instance} {verb}", timeout=180)

    def unit(instance: str, verb: str) -> subprocess.CompletedProcess[str]:
        return on_node(INSTANCE_NODE[instance], f"systemctl {verb} todo-api@{instance}", timeout=180)

    return Target(
        url=url,
        node_of=dict(INSTANCE_NODE),
        apictl=apictl,
        unit=unit,
        balancers=[n.name for n in TOPO.group(LOADBALANCER_GROUP)],
        public_address=TOPO.public_address,
    )


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    kind = os.environ.get("HALAB_BROWSER_TARGET", "lab")
    if kind == "local":
        from .local_stack import LocalStack

        stack = LocalStack().start()
        try:
            yield Target(
                url=stack.url,
                node_of=dict.fromkeys(stack.sockets, "local"),
                apictl=stack.apictl,
                balancers=list(stack.balancers),
                public_address=stack.public_address,
                set_balancer_state=stack.set_balancer_state,
            )
        finally:
            stack.stop()
    elif kind == "lab":
        yield _lab_target()
    else:
        raise pytest.UsageError(f"HALAB_BROWSER_TARGET={kind!r}: use lab or local")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="halab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console: CSP violations
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
