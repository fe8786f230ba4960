"""`agg=rate`: the per-second increase of a counter per step bucket, counter resets handled.

The increase over bucket b is the last value in b minus the last value in the bucket before
(the range is read one step earlier for that); a drop means the counter restarted, and the
value after the restart is the increase (as Prometheus' `rate`). A bucket whose previous bucket
holds no point has no rate. With `group_by` the series' rates are summed per group (PromQL's
`sum by (...) (rate(...))`). Reads only `last` per bucket, so the rollup tiers answer it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from legion.aggregator.store.query import group_keys
from legion.kernel.errors import QueryError

if TYPE_CHECKING:
    from legion.aggregator.store.query_methods import QueryMethods

RATE = "rate"


def query_rate(store: QueryMethods, metric: str, node: str | None, labels: Mapping[str, str] | None,
               since_ms: int | None, until_ms: int | None, step_ms: int | None,
               group_by: str | None) -> list[dict[str, Any]]:
    """Rows like `Store.query`'s, each value a rate per second."""
    if step_ms is None or step_ms <= 0:
        raise QueryError("rate needs a step")
    start = None if since_ms is None else since_ms // step_ms * step_ms
    rows = store.query(metric, node=node, labels=labels,
                       since_ms=None if start is None else start - step_ms,
                       until_ms=until_ms, step_ms=step_ms, agg="last")
    per_series: dict[tuple[str, tuple[tuple[str, str], ...]], list[dict[str, Any]]] = \
        defaultdict(list)
    for r in rows:
        per_series[(r["node"], tuple(sorted(r["labels"].items())))].append(r)
    out: list[dict[str, Any]] = []
    for series in per_series.values():
        prev = None
        for r in series:  # ordered by bucket within a series
            if prev is not None and r["ts_ms"] - prev["ts_ms"] == step_ms and (
                    start is None or r["ts_ms"] >= start):
                inc = r["value"] - prev["value"]
                if inc < 0:  # the counter restarted
                    inc = r["value"]
                out.append({**r, "value": inc * 1000 / step_ms})
            prev = r
    return out if group_by is None else _sum_by(out, group_by)


def _sum_by(rows: list[dict[str, Any]], group_by: str) -> list[dict[str, Any]]:
    keys = group_keys(group_by)
    sums: dict[tuple[tuple[str, str], ...], dict[int, float]] = defaultdict(
        lambda: defaultdict(float))
    for r in rows:
        group = tuple((k, r["node"] if k == "node" else r["labels"].get(k, "")) for k in keys)
        sums[group][r["ts_ms"]] += r["value"]
    metric = rows[0]["metric"] if rows else ""
    out = []
    for group in sorted(sums):
        values = dict(group)
        node = values.pop("node", None)
        out += [{"ts_ms": ts, "node": node, "metric": metric, "labels": values, "value": v}
                for ts, v in sorted(sums[group].items())]
    return out
