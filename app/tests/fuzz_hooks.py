"""Schemathesis hooks of test_fuzz (loaded by the CLI through SCHEMATHESIS_HOOKS).

A key names ONE logical request: a client never sends the same Idempotency-Key (or the load
balancer the same X-Request-ID) with another body. Generated values are few and repeat across
cases ("0", "null"), so the API would rightly answer 422 "key reused with a different body".
Each usable key gets a unique suffix; empty or overlong keys (negative cases) stay as they are.
"""

from __future__ import annotations

import itertools
from typing import Any

import schemathesis

KEY_HEADERS = ("idempotency-key", "x-request-id")
_serial = itertools.count()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = case.headers
    if not headers:
        return
    for name in list(headers):
        value = headers[name]
        if name.lower() in KEY_HEADERS and isinstance(value, str) and 0 < len(value) <= 200:
            headers[name] = f"{value}~{next(_serial)}"
