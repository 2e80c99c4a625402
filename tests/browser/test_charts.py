"""The page's charts through the seed scenario, in a real browser (issue 17): a bounded load
through the public address, instance 1 stressed over its threshold through the management
plane, then cleared. The charts (from Prometheus, through NGINX's fixed paths) must show what
happened: instance 1's memory crossing its threshold line, its share of the requests dropping
to 0 and coming back, and no 5xx for the clients all along. Screenshots before, during, after.

The lab only: the loopback stack has no Prometheus (there the panel must stay out of the way,
which tests/browser/test_page.py's run on that route shows).
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Target
from .test_page import assert_fits_a_phone, screenshot, wait_for

SICK = "1"
# Bounds that only stop a hung test: a change reaches the charts in ~20 s (10 s rate window,
# 3 s scrapes and rule evaluations, the page's refresh).
CHART_WAIT_S = 90.0
LOAD_MAX_REQUESTS = 4000
LOAD_MAX_SECONDS = 240.0


class Load(threading.Thread):
    """GETs through the public address, about 20 a second, until stopped or its bounds end it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopped = threading.Event()
        self.sent = 0

    def run(self) -> None:
        deadline = time.monotonic() + LOAD_MAX_SECONDS
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.stopped.is_set() and self.sent < LOAD_MAX_REQUESTS and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):  # the charts, not this loop, say what clients met
                    client.get("api/todos", params={"limit": 1})
                self.sent += 1
                self.stopped.wait(0.05)


def charts(driver: Any) -> dict[str, Any]:
    return dict(driver.execute_script("return window.halabCharts || {}"))


def points(driver: Any, chart: str, label: str, since: float) -> list[tuple[float, float]]:
    """(time, value) of one plotted series from `since` (unix seconds) on, gaps left out."""
    plotted = charts(driver).get(chart) or {}
    labels = plotted.get("labels") or []
    if label not in labels:
        return []
    xs, ys = plotted["data"][0], plotted["data"][1 + labels.index(label)]  # data[0]: the time axis
    return [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and x >= since]


def crossed(driver: Any, since: float) -> bool:
    used = dict(points(driver, "memory", f"instance {SICK} used", since))
    threshold = dict(points(driver, "memory", f"instance {SICK} threshold", since))
    return any(t in threshold and value > threshold[t] for t, value in used.items())


def served(driver: Any, since: float, instance: str = SICK) -> list[float]:
    """Requests per second the instance served through the load balancers, as charted."""
    return [v for _, v in points(driver, "traffic", f"instance {instance} served", since)]


def both_serving(driver: Any, since: float) -> bool:
    return all((served(driver, since, i)[-1:] or [0.0])[0] > 0 for i in ("1", "2"))


def panel_shot(driver: Any, selector: str, path: Path) -> Path:
    """A PNG of one element of the page (for the README: the charts panel alone)."""
    rect = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height, scale: 1};",
        selector,
    )
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": rect})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    return path


def toggle_a_line_with_the_keyboard(driver: Any) -> str:
    """Tab (nothing else) to the first legend button, Space: its line is hidden (aria-pressed
    false); Space again shows it. Returns the line's label."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    in_legend = "const a = document.activeElement; return a && a.closest('.chart-legend') ? a.dataset.series : null"
    pressed = "return document.activeElement.getAttribute('aria-pressed')"
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    for _ in range(80):
        if driver.execute_script(in_legend):
            break
        ActionChains(driver).send_keys(Keys.TAB).perform()
    label = driver.execute_script(in_legend)
    assert label, "Tab never reached a chart's legend"
    before = driver.execute_script(pressed)
    ActionChains(driver).send_keys(Keys.SPACE).perform()
    after = driver.execute_script(pressed)
    ActionChains(driver).send_keys(Keys.SPACE).perform()
    assert (before, after, driver.execute_script(pressed)) == ("true", "false", "true"), (label, before, after)
    return str(label)


def test_charts_through_the_seed_scenario(target: Target, browser: Any, artifacts: Path) -> None:
    if target.set_balancer_state is not None:
        pytest.skip("no Prometheus on the loopback route: no charts")
    driver = browser
    driver.get(target.url)
    load = Load(target.url)
    load.start()
    stressed = False
    t_start = time.time()
    try:
        wait_for("the charts to show both instances serving", lambda: both_serving(driver, t_start), CHART_WAIT_S, step=0.5)
        print(f"keyboard: Tab reached the legend, Space hid and showed {toggle_a_line_with_the_keyboard(driver)!r}")
        panel = driver.execute_script(
            "const p = document.querySelector('[data-chart=memory]'); return p && p.closest('section').id"
        )
        driver.execute_script("document.querySelector('[data-chart=memory]').scrollIntoView()")
        screenshot(driver, artifacts / "10-charts-before.png")

        # -- the seed scenario: instance 1 over its threshold ---------------------------------
        t_stress = time.time()
        target.apictl(SICK, "stress")
        stressed = True
        wait_for("instance 1's memory over its threshold line", lambda: crossed(driver, t_stress), CHART_WAIT_S, step=0.5)
        wait_for(
            "instance 1's share of the requests at 0",
            lambda: any(v == 0 for v in served(driver, t_stress)),
            CHART_WAIT_S,
            step=0.5,
        )
        marks = driver.execute_script("return window.halabMarks || []")
        assert any("UNHEALTHY" in m["text"] and m["t"] >= t_stress - 5 for m in marks), marks[-10:]
        screenshot(driver, artifacts / "11-charts-during.png")
        panel_shot(driver, "#charts", artifacts / "11-charts-panel.png")  # docs/charts.png
        screenshot(driver, artifacts / "11-charts-during-390px.png", width=390, mobile=True)

        # -- cleared: instance 1 back in the share ---------------------------------------------
        target.apictl(SICK, "clear")
        stressed = False
        t_clear = time.time()
        wait_for("instance 1 serving again", lambda: any(v > 0 for v in served(driver, t_clear)), CHART_WAIT_S, step=0.5)
        screenshot(driver, artifacts / "12-charts-after.png")

        # -- no client met a 5xx, the whole time ---------------------------------------------------
        errors = points(driver, "traffic", "5xx", t_start)
        assert errors, "no 5xx series on the traffic chart"
        assert all(v == 0 for _, v in errors), f"5xx to clients during the scenario: {[e for e in errors if e[1]]}"
        alerts = driver.execute_script("return [...document.querySelectorAll('#alerts-list li')].map(li => li.textContent)")
        print(
            f"charts: {len(points(driver, 'memory', f'instance {SICK} used', t_start))} points since the start; "
            f"load sent {load.sent} requests; panel in #{panel}; alerts listed now: {alerts}"
        )
        assert_fits_a_phone(driver)
        refused = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not refused, refused
    finally:
        load.stopped.set()
        if stressed:
            target.apictl(SICK, "clear")
        load.join(timeout=10)
