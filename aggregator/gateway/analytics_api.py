"""Analytics handlers: anomalies ranked by anomaly rate (Netdata's "anomaly advisor"),
forecasts, learned normal bands (`keys.BANDS_KEY`, a `BandBook`; None: 503), retrain requests.

Anomaly scores are stored as ordinary series of node `analytics` (see
aggregator/analytics_bridge/bridge.py), so the rate of a series is the average of its
`legion_anomaly_flag` over the range, read through the store like any query.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiohttp import web

from legion.aggregator.gateway.api import _METRIC_RE, _NODE_RE, BadRequest, _opt, _params
from legion.aggregator.gateway.auth import AUDIT_DETAILS_KEY, json_error, requires
from legion.aggregator.gateway.keys import BANDS_KEY, RETRAIN_KEY, SOURCES_KEY, STORE_KEY
from legion.aggregator.gateway.resolution import finest_holding
from legion.aggregator.gateway.store_reader import StoreReader
from legion.aggregator.gateway.timefmt import iso_ms, now_ms, parse_duration_ms, parse_time_ms

ANALYTICS_NODE = "analytics"
DEFAULT_SINCE = "1h"
MAX_ROWS = 200
BAND_AHEAD_MS = 24 * 3_600_000
LATEST_LOOKBACK_STEPS = 10
MAX_SERIES_KEY = 1024


@requires("read")
async def anomalies(request: web.Request) -> web.Response:
    """GET /api/v1/anomalies: series ranked by anomaly rate over `since`."""
    store = request.app[STORE_KEY]
    _params(request, ("node", "since", "limit"))
    node = _opt(request, "node", _NODE_RE)
    since = request.query.get("since", DEFAULT_SINCE)
    try:
        since_ms = parse_time_ms(since, now_ms())
    except ValueError as exc:
        raise BadRequest(f"invalid since: {exc}") from None
    try:
        limit = min(MAX_ROWS, int(request.query.get("limit", "50")))
    except ValueError:
        raise BadRequest("invalid limit: must be an integer") from None
    labels = {"node": node} if node else None
    # A week is beyond raw retention: read it whole from the finest tier holding its start.
    _, width = await asyncio.to_thread(finest_holding, store, since_ms, None)
    if width is not None:
        since_ms = since_ms // width * width
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
    """GET /api/v1/forecasts: the latest forecast of every predicted series."""
    _params(request, ("node", "metric"))
    node, metric = _opt(request, "node", _NODE_RE), _opt(request, "metric", _METRIC_RE)
    getter = request.app[SOURCES_KEY].get("forecasts")
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
    """POST /api/v1/analytics/retrain?series=: retrain one series' model (or all)."""
    _params(request, ("series",))
    retrain = request.app[RETRAIN_KEY]
    series = request.query.get("series") or None
    if series is not None and len(series) > MAX_SERIES_KEY:
        raise BadRequest(f"invalid series: longer than {MAX_SERIES_KEY} characters")
    request[AUDIT_DETAILS_KEY] = {"retrain": series or "all"}
    try:
        ok = retrain is not None and await asyncio.to_thread(retrain, series)
    except LookupError as exc:  # not a watched series: nothing is kept for it
        return json_error(404, str(exc))
    if not ok:
        return json_error(503, "analytics is not running on this aggregator")
    return web.json_response({"retrain": series or "all", "when": "next detect job"},
                             status=202)


@requires("read")
async def bands_route(request: web.Request) -> web.Response:
    """GET /api/v1/bands?node=&metric=&step=: learned normal bands (503 while they are off)."""
    _params(request, ("node", "metric", "step"))
    node, metric = _opt(request, "node", _NODE_RE), _opt(request, "metric", _METRIC_RE)
    step = request.query.get("step")
    try:
        step_ms = parse_duration_ms(step) if step else None
    except ValueError as exc:
        raise BadRequest(f"invalid step: {exc}") from None
    if step_ms is not None and not 1000 <= step_ms <= BAND_AHEAD_MS:
        raise BadRequest("step must be between 1s and 24h")
    bands = request.app[BANDS_KEY]
    if bands is None:
        return json_error(503, "learned bands are off on this aggregator "
                               "(ai_settings.ml_threshold_adjustment, analytics)")
    store = request.app[STORE_KEY]
    now = now_ms()
    rows = await asyncio.to_thread(
        lambda: [band_view(e, _latest(store, e, now), now, step_ms)
                 for e in bands.entries(node=node, metric=metric)])
    return web.json_response(rows)


def _num(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def _latest(store: StoreReader, e: Any, now: int) -> tuple[int, float] | None:
    """(ts_ms, value) of the series' newest value, aggregated like the band's training values."""
    step = e.step_ms
    since = now - LATEST_LOOKBACK_STEPS * (step or 60_000)
    rows = store.query(e.metric, node=e.node, labels=e.labels or None, since_ms=since,
                       until_ms=now, step_ms=step or None, agg="avg")
    rows = [r for r in rows if r["node"] == e.node and dict(r["labels"]) == e.labels]
    if not rows:
        return None
    r = max(rows, key=lambda r: r["ts_ms"])
    return int(r["ts_ms"]), float(r["value"])


def band_view(e: Any, latest: tuple[int, float] | None, now: int,
              step_ms: int | None = None) -> dict[str, Any]:
    """One `/api/v1/bands` answer row: limits now and over the next 24 h, latest value vs band."""
    step = step_ms or e.step_ms or 60_000
    start = now // step * step
    ts = np.arange(start, now + BAND_AHEAD_MS + 1, step, dtype=np.int64)
    lo, hi = e.band.limits(ts)
    now_lo, now_hi = e.band.limits(now)
    out: dict[str, Any] = {
        "series": e.series, "node": e.node, "metric": e.metric, "labels": e.labels,
        "version": e.version, "computed": iso_ms(e.computed_ms), "computed_ms": e.computed_ms,
        "trained_from_ms": e.band.trained_from_ms, "trained_to_ms": e.band.trained_to_ms,
        "trained_from": iso_ms(e.band.trained_from_ms), "trained_to": iso_ms(e.band.trained_to_ms),
        "values_step_ms": e.step_ms, "step_ms": step,
        "now": {"ts": iso_ms(now), "ts_ms": now, "lower": _num(float(now_lo)),
                "upper": _num(float(now_hi))},
        "latest": None, "outside": None,
        "band": [[int(t), _num(a), _num(b)] for t, a, b in zip(ts.tolist(), lo.tolist(),
                                                                 hi.tolist(), strict=True)]}
    if latest is not None:
        t, v = latest
        out["latest"] = {"ts": iso_ms(t), "ts_ms": t, "value": v}
        out["outside"] = bool(e.band.outside(t, v))
    return out


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))
