"""`GET /metrics`: Prometheus text of the gateway's, the components' and (`?latest=`) stored series.

The gateway's own counters come from `telemetry.py`; the components' from the app's
`COMPONENT_TELEMETRY_KEY` (the aggregator's ingest, sinks and alerting samples) or, without one,
the flattened status; `?latest=<glob>&node=` adds the newest stored point of matching series.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from legion.aggregator.gateway import prom, telemetry
from legion.aggregator.gateway.api import BadRequest
from legion.aggregator.gateway.auth import requires
from legion.aggregator.gateway.keys import (
    COMPONENT_TELEMETRY_KEY,
    GATEWAY_STATUS_KEY,
    STATUS_KEY,
    STORE_KEY,
)
from legion.aggregator.gateway.timefmt import now_ms

_LATEST_GLOB = re.compile(r"^[a-zA-Z_:*?][a-zA-Z0-9_:*?]{0,199}$")


@requires("read")
async def metrics(request: web.Request) -> web.Response:
    """GET /metrics?latest=&node=."""
    for k in request.query:
        if k not in ("latest", "node"):
            raise BadRequest(f"unknown parameter {k!r}; allowed: latest, node")
    samples: list[Any] = list(telemetry.samples(request.app[GATEWAY_STATUS_KEY]()))
    component = request.app[COMPONENT_TELEMETRY_KEY]
    if component is not None:
        samples.extend(prom.telemetry_samples(await asyncio.to_thread(_telemetry_items,
                                                                       component)))
    else:
        samples.extend(prom.flatten_status(await asyncio.to_thread(request.app[STATUS_KEY])))
    glob = request.query.get("latest")
    if glob:
        if not _LATEST_GLOB.match(glob):
            raise BadRequest(f"invalid latest {glob!r}: a metric name glob")
        node = request.query.get("node") or None
        rows = await asyncio.to_thread(request.app[STORE_KEY].latest, glob, node)
        samples.extend(prom.latest_samples(rows))
    return web.Response(body=prom.render(samples).encode(),
                        headers={"Content-Type": prom.CONTENT_TYPE})


def _telemetry_items(component: Any) -> list[Any]:
    if hasattr(component, "samples"):
        return list(component.samples(now_ms()))
    return list(component())
