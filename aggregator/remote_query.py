"""Queries through a Prometheus HTTP API (`storage.remote_read_url`): one query path at any scale.

`RemoteQueryStore` stands where the gateway holds the `Store`: `query` and `series` (what
`/api/v1/query`, `/api/v1/series`, `legionctl query` and the dashboard's history read) go to the
remote store; everything else (nodes and their seq bookkeeping, latest values for the live
stream, alerts, analytics, stats) stays local, by delegation to the local store.

Mapping back (the inverse of `sinks/prompb.py`): `__name__` is the metric, `node` the node, the
other labels are the series labels. Time ranges keep the local semantics, [since, until):

* raw points: the instant query ``sel[Ns]`` at `until` - 1 ms (range vectors return the stored
  samples themselves; ``/api/v1/query_range`` would resample them);
* stepped: ``/api/v1/query_range`` of ``<agg>_over_time(sel[step])`` evaluated at each bucket's
  last millisecond, so the window is exactly the local bucket [b, b + step).
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from legion.aggregator.config import AggregatorSettings
from legion.aggregator.sinks.prompb import NODE_LABEL, label_name, metric_name
from legion.kernel.errors import StoreError

_OVER_TIME = {"avg": "avg_over_time", "min": "min_over_time", "max": "max_over_time",
              "sum": "sum_over_time", "count": "count_over_time", "last": "last_over_time"}
DEFAULT_RANGE_MS = 3_600_000


def _quote(v: str) -> str:
    return json.dumps(v)  # PromQL string literals accept JSON escapes


def selector(metric: str | None, node: str | None = None,
             labels: Mapping[str, str] | None = None) -> str:
    """A PromQL series selector; a metric glob (`*`, `?`) becomes a regex on `__name__`."""
    parts = []
    if metric is None:
        parts.append('__name__=~".+"')
    elif any(c in metric for c in "*?"):
        rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in metric)
        parts.append(f"__name__=~{_quote(rx)}")
    else:
        parts.append(f"__name__={_quote(metric_name(metric))}")
    if node:
        parts.append(f"{NODE_LABEL}={_quote(node)}")
    for k, v in (labels or {}).items():
        parts.append(f"{label_name(k)}={_quote(v)}")
    return "{" + ",".join(parts) + "}"


def _split(metric: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    labels = dict(metric)
    name = labels.pop("__name__", "")
    node = labels.pop(NODE_LABEL, "")
    return name, node, labels


class PromApi:
    """A minimal Prometheus HTTP API client (GET, JSON, `status: success`)."""

    def __init__(self, base_url: str, timeout: float = 30.0, ca_path: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._ssl = ssl.create_default_context(cafile=ca_path) if base_url.startswith(
            "https") else None

    def get(self, path: str, **params: Any) -> Any:
        """GET `path` and return its `data`; `StoreError` on any failure."""
        url = self.base + path + "?" + urllib.parse.urlencode(params, doseq=True)
        req = urllib.request.Request(url, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                msg = exc.reason
            raise StoreError(f"remote query {path} failed: {exc.code} {msg}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StoreError(f"remote store at {self.base} unreachable: {exc}") from None
        if body.get("status") != "success":
            raise StoreError(f"remote query {path} failed: {body.get('error')}")
        return body["data"]


class RemoteQueryStore:
    """`query`/`series` from a Prometheus-compatible API; every other call to the local store."""

    def __init__(self, api: PromApi, local: Any, now_ms: Any = None) -> None:
        self.api = api
        self.local = local
        self._now = now_ms or (lambda: int(time.time() * 1000))

    def series(self, node: str | None = None, metric: str | None = None
               ) -> list[dict[str, Any]]:
        """Series known to the remote store (ids are a stable hash: there is no local row)."""
        rows = self.api.get("/api/v1/series", **{"match[]": selector(metric, node)})
        out: list[dict[str, Any]] = []
        for m in rows:
            name, nd, labels = _split(m)
            key = json.dumps([nd, name, sorted(labels.items())])
            out.append({"id": zlib.crc32(key.encode()), "node": nd, "metric": name,
                        "labels": labels})
        out.sort(key=lambda r: (r["node"], r["metric"], sorted(r["labels"].items())))
        return out

    def query(self, metric: str, node: str | None = None,
              labels: Mapping[str, str] | None = None, since_ms: int | None = None,
              until_ms: int | None = None, step_ms: int | None = None, agg: str = "avg",
              group_by: str | None = None) -> list[dict[str, Any]]:
        """Same rows as `Store.query` (raw, or one value per series per step bucket)."""
        if group_by is not None:
            raise StoreError("group_by is not available with storage.remote_read_url")
        hi = until_ms if until_ms is not None else self._now() + 1
        lo = since_ms if since_ms is not None else hi - DEFAULT_RANGE_MS
        sel = selector(metric, node, labels)
        rows: list[dict[str, Any]] = []
        if step_ms is None:
            span = max(1, hi - lo)
            data = self.api.get("/api/v1/query", query=f"{sel}[{span}ms]",
                                time=f"{(hi - 1) / 1000:.3f}")
            for r in data["result"]:
                name, nd, lab = _split(r["metric"])
                rows += [{"ts_ms": round(float(t) * 1000), "node": nd, "metric": name,
                          "labels": lab, "value": float(v)} for t, v in r["values"]
                         if lo <= round(float(t) * 1000) < hi]
        else:
            first = lo // step_ms * step_ms
            last = -(-hi // step_ms) * step_ms - step_ms
            expr = f"{_OVER_TIME[agg]}({sel}[{step_ms}ms])"
            data = self.api.get("/api/v1/query_range", query=expr,
                                start=f"{(first + step_ms - 1) / 1000:.3f}",
                                end=f"{(last + step_ms - 1) / 1000:.3f}",
                                step=f"{step_ms / 1000:.3f}")
            for r in data["result"]:
                _name, nd, lab = _split(r["metric"])
                rows += [{"ts_ms": round(float(t) * 1000) - step_ms + 1, "node": nd,
                          "metric": metric, "labels": lab, "value": float(v)}
                         for t, v in r["values"]]
        rows.sort(key=lambda r: (r["node"], sorted(r["labels"].items()), r["ts_ms"]))
        return rows

    def query_now(self, metric: str, node: str | None = None,
                  labels: Mapping[str, str] | None = None, since_ms: int | None = None,
                  until_ms: int | None = None, step_ms: int | None = None, agg: str = "avg",
                  group_by: str | None = None) -> list[dict[str, Any]] | None:
        """Never: every query goes to the remote store (not to the local query head)."""
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)


def query_store(config: AggregatorSettings, local: Any) -> Any:
    """The store the gateway reads: remote when `storage.remote_read_url` is set, else local."""
    st = config.storage
    if not st.remote_read_url:
        return local
    headers = dict(st.remote_read_headers)
    if st.remote_read_bearer_token_file:
        token = Path(st.remote_read_bearer_token_file).read_text().strip()
        headers["Authorization"] = f"Bearer {token}"
    ca = st.remote_read_tls_ca_path or None
    return RemoteQueryStore(PromApi(st.remote_read_url, ca_path=ca, headers=headers), local)
