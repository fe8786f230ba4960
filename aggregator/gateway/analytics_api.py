"""Analytics read routes: anomalies ranked by anomaly rate (Netdata's "anomaly advisor"), forecasts.

Anomaly scores are stored as ordinary series of node `analytics` (see
aggregator/analytics_dispatch.py), so the rate of a series is the average of its
`legion_anomaly_flag` over the range, read through the store like any query.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from legion.aggregator.gateway.api import _METRIC_RE, _NODE_RE, BadRequest, _opt, _params
from legion.aggregator.gateway.auth import AUDIT_DETAILS_KEY, json_error, requires
from legion.aggregator.gateway.timefmt import iso_ms, now_ms, parse_time_ms

ANALYTICS_NODE = "analytics"
DEFAULT_SINCE = "1h"
MAX_ROWS = 200


def make_analytics_routes(store: Any, sources: Mapping[str, Callable[[], list[dict[str, Any]]]],
                          retrain: Callable[[str | None], bool] | None = None
                          ) -> list[web.RouteDef]:
    """GET /api/v1/anomalies and /api/v1/forecasts; POST /api/v1/analytics/retrain."""

    @requires("read")
    async def anomalies(request: web.Request) -> web.Response:
        _params(request, ("node", "since", "limit"))
        node = _opt(request, "node", _NODE_RE)
        since = request.query.get("since", DEFAULT_SINCE)
        try:
            since_ms = parse_time_ms(since, now_ms())
            limit = min(MAX_ROWS, int(request.query.get("limit", "50")))
        except (ValueError, TypeError) as exc:
            raise BadRequest(str(exc)) from exc
        labels = {"node": node} if node else None
        rates, peaks = await asyncio.gather(
            asyncio.to_thread(store.topk, "legion_anomaly_flag", k=MAX_ROWS, agg="avg",
                              node=ANALYTICS_NODE, labels=labels, since_ms=since_ms),
            asyncio.to_thread(store.topk, "legion_anomaly_score", k=MAX_ROWS, agg="max",
                              node=ANALYTICS_NODE, labels=labels, since_ms=since_ms))
        peak = {_key(r["labels"]): r["value"] for r in peaks}
        rows = []
        for r in rates:
            lb = dict(r["labels"])
            rows.append({"node": lb.pop("node", None), "metric": lb.pop("metric", None),
                         "labels": lb, "anomaly_rate": round(r["value"], 4),
                         "max_score": round(peak.get(_key(r["labels"]), 0.0), 4)})
        rows.sort(key=lambda r: (r["anomaly_rate"], r["max_score"]), reverse=True)
        return web.json_response(rows[:max(0, limit)])

    @requires("read")
    async def forecasts(request: web.Request) -> web.Response:
        _params(request, ("node", "metric"))
        node, metric = _opt(request, "node", _NODE_RE), _opt(request, "metric", _METRIC_RE)
        getter = sources.get("forecasts")
        items = getter() if getter else []
        out = []
        for f in items:
            if (node and f["node"] != node) or (metric and metric not in (f["metric"],
                                                                         f.get("name"))):
                continue
            f = dict(f)
            if f.get("breach_at_ms"):
                f["breach_at"] = iso_ms(f["breach_at_ms"])
            out.append(f)
        return web.json_response(out)

    @requires("write")
    async def retrain_route(request: web.Request) -> web.Response:
        _params(request, ("series",))
        series = request.query.get("series") or None
        request[AUDIT_DETAILS_KEY] = {"retrain": series or "all"}
        if retrain is None or not retrain(series):
            return json_error(503, "analytics is not running on this aggregator")
        return web.json_response({"retrain": series or "all", "when": "next detect job"},
                                 status=202)

    return [web.get("/api/v1/anomalies", anomalies), web.get("/api/v1/forecasts", forecasts),
            web.post("/api/v1/analytics/retrain", retrain_route)]


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))
