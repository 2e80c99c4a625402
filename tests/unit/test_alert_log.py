"""The alert receiver (roles/monitoring/files/halab-alert-log.py) against a real HTTP client:
Alertmanager's webhook payload in, one journal line per alert out (priority prefix, JSON)."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from types import ModuleType

import httpx
import pytest

from tests.support.run import REPO

SCRIPT = REPO / "roles" / "monitoring" / "files" / "halab-alert-log.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("halab_alert_log", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ALERT_LOG = load()

NOTIFICATION = {
    "version": "4",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "TodoApiInstanceUnhealthy", "todo_api_instance": "1", "severity": "warning"},
            "annotations": {"summary": "todo API instance 1 on app1 reports unhealthy"},
            "startsAt": "2026-12-03T01:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "TargetDown", "job": "node"},
            "annotations": {},
            "startsAt": "2026-12-03T00:59:00Z",
            "endsAt": "2026-12-03T01:00:03Z",
        },
    ],
}


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ALERT_LOG.Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_each_alert_is_a_journal_line_with_its_priority(receiver: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert httpx.post(receiver, json=NOTIFICATION, timeout=5).status_code == 204
    out = capsys.readouterr().out.splitlines()
    assert [line[:3] for line in out] == ["<4>", "<5>"]  # firing: warning; resolved: notice
    firing, resolved = (json.loads(line[3:]) for line in out)
    assert firing["msg"] == "firing: TodoApiInstanceUnhealthy" and firing["endsAt"] is None
    assert firing["summary"] == "todo API instance 1 on app1 reports unhealthy"
    assert resolved["msg"] == "resolved: TargetDown" and resolved["endsAt"] == "2026-12-03T01:00:03Z"


@pytest.mark.parametrize(("body", "status"), [(b"not json", 400), (b"[1, 2]", 400), (b"", 400)])
def test_what_is_not_a_notification_is_refused_and_logs_nothing(
    receiver: str, capsys: pytest.CaptureFixture[str], body: bytes, status: int
) -> None:
    assert httpx.post(receiver, content=body, timeout=5).status_code == status
    assert capsys.readouterr().out == ""
