from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import psutil

from todo_api.management import create_management_app


async def test_stress_and_clear_in_process(make_client: Callable[..., Any]) -> None:
    rss_mb = psutil.Process().memory_info().rss // (1024 * 1024)
    # fallback mode (no cgroup): limit = current RSS + 150 MB, so 180 MB more is over 80%
    c, rt = await make_client(memory_limit_mb=int(rss_mb + 150), stress_chunk_mb=30)
    mgmt = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_management_app(rt)), base_url="http://mgmt"
    )
    try:
        assert (await c.get("/api/health")).status_code == 200
        warned: list[str] = []
        log_warning = rt.log.warning

        def warning(msg: str, *args: Any, **kwargs: Any) -> None:
            warned.append(msg)
            log_warning(msg, *args, **kwargs)

        rt.log.warning = warning
        r = await mgmt.post("/stress", params={"mb": 180})
        # the crossing is seen at the chunk that made it, before the stress ends (an
        # allocation past MemoryMax may be killed before any later reading)
        assert [m.split(":")[0] for m in warned][:2] == ["memory over threshold", "stress"], warned
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["allocatedMB"] == 180 and body["chunks"] == 6
        assert body["health"]["status"] == "UNHEALTHY"
        assert body["health"]["rssMB"] >= rss_mb + 150
        assert (await c.get("/api/health")).status_code == 503
        assert (await c.post("/api/todos", json={"texto": "x"})).status_code == 429
        # stressing again to the same target adds nothing
        assert (await mgmt.post("/stress", params={"mb": 180})).json()["addedMB"] == 0

        r = await mgmt.post("/clear")
        assert r.status_code == 200
        assert r.json()["freedMB"] == 180 and r.json()["allocatedMB"] == 0
        assert r.json()["health"]["status"] == "OK", r.json()
        rt.monitor.invalidate()
        assert (await c.get("/api/health")).status_code == 200
        st = (await mgmt.get("/status")).json()
        assert st["stress"] == {"chunks": 0, "allocatedMB": 0} and st["instance"] == "1"
    finally:
        rt.hog.clear()
        await mgmt.aclose()
