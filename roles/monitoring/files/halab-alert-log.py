#!/usr/bin/python3
"""Alertmanager's webhook receiver for the person at the lab: each alert of each notification
becomes one JSON line in the journal, firing ones at priority warning, resolved ones at
notice (`journalctl -u halab-alert-log -p warning` lists what fired).

Standard library only: it runs on the monitoring node's own Python, behind a hardened unit,
on loopback (Alertmanager on the same node is its only client).

    halab-alert-log.py ADDRESS PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# syslog priorities, as journald reads a "<N>" prefix on a line of stdout
PRIORITY = {"firing": 4, "resolved": 5}
# Alertmanager's notifications are a few KiB; anything far larger is not one.
MAX_BODY = 1 << 20


def lines(notification: dict[str, Any]) -> list[str]:
    """One journal line per alert of an Alertmanager webhook notification (version 4)."""
    out = []
    for alert in notification.get("alerts") or []:
        status = str(alert.get("status", "unknown"))
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        entry = {
            "msg": f"{status}: {labels.get('alertname', '?')}",
            "summary": annotations.get("summary"),
            "labels": labels,
            "startsAt": alert.get("startsAt"),
            "endsAt": alert.get("endsAt") if status == "resolved" else None,
        }
        out.append(f"<{PRIORITY.get(status, 6)}>" + json.dumps(entry, separators=(",", ":")))
    return out


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self.send_error(413 if length > MAX_BODY else 400)
            return
        try:
            notification = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "not JSON")
            return
        if not isinstance(notification, dict):
            self.send_error(400, "not a notification")
            return
        for line in lines(notification):
            print(line, flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        """Quiet: the alerts are the log, not the requests that carried them."""


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((argv[1], int(argv[2])), Receiver)
    print("<6>" + json.dumps({"msg": f"listening on {argv[1]}:{argv[2]}"}), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
