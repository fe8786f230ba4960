"""Which stored series the bridge analyses, and the store queries that turn them into jobs.

`WATCHED` (anomaly detection per series), `NODE_VECTOR` (one multivariate model per node,
`analytics.node_detector`) and `PREDICTED` (the seed's `prediction_config` names) are the tables;
`select_watched` lists the stored series they select (cached by `NewPoints`, new_points.py), and
the `schedule_*` functions submit a job to the `JobBook` for each series (or node) with points it
has not taken yet, reading only those points. A series is keyed
`node|metric|k=v,...` (`series_key`) everywhere: job ids, model files, bands, retrain requests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from legion.aggregator.analytics_bridge.jobs import JobBook
from legion.aggregator.analytics_bridge.new_points import (
    NO_TS,
    NewPoints,
    NewPointsReader,
    Selection,
    Want,
)
from legion.analytics.config import AnalyticsConfig

ANALYTICS_NODE = "analytics"
"""The node of the result series (and never itself analysed)."""
MAX_HISTORY_POINTS = 2000
SCHEDULE_BUDGET_SECS = 0.05  # reads per schedule pass (the rest: another pass right after)

# The series watched for anomalies: metric name -> required labels (exact values; None = absent).
WATCHED: dict[str, dict[str, str | None]] = {
    "system_cpu_usage_percent": {"cpu": None},
    "system_memory_usage_percent": {},
    "system_disk_usage_percent": {},
    "system_load1": {},
    "agent_response_time_ms": {"quantile": "p95", "task_type": "__all__"},
    "agent_success_rate_percent": {},
    "agent_task_queue_depth": {},
}
# How a watched metric's bucket is summed up when detection runs on buckets
# (`analytics.detect_step_secs`): its worst value. That is the max for every metric where high
# is bad (a one-second spike stays whole), the min where low is bad, so that a dip of the success
# rate shorter than a bucket is not hidden behind the bucket's good seconds.
LOWER_IS_WORSE: frozenset[str] = frozenset({"agent_success_rate_percent"})


def worst_of_bucket(metric: str) -> str:
    """The stepped-query aggregation of a watched metric's buckets: "min" or "max"."""
    return "min" if metric in LOWER_IS_WORSE else "max"


# The node vector of `analytics.node_detector` (one multivariate model per node), in column
# order: metric -> required labels. The agent stamps a whole tick with one time, so the rows
# are the timestamps every column has.
NODE_VECTOR: tuple[tuple[str, dict[str, str | None]], ...] = (
    ("system_cpu_usage_percent", {"cpu": None}),
    ("system_memory_usage_percent", {}),
    ("system_load1", {}),
    ("system_processes", {}),
)
NODE_VECTOR_METRIC = "node_vector"
"""The `metric` label of a node model's scores."""

# prediction_config names (the seed's) -> (metric, required labels)
PREDICTED: dict[str, tuple[str, dict[str, str | None]]] = {
    "cpu_usage": ("system_cpu_usage_percent", {"cpu": None}),
    "memory_usage": ("system_memory_usage_percent", {}),
    "disk_usage": ("system_disk_usage_percent", {}),
    "response_time": ("agent_response_time_ms", {"quantile": "p95", "task_type": "__all__"}),
}


class SeriesReader(NewPointsReader, Protocol):
    """The part of `Store` the bridge reads."""

    def query(self, metric: str, node: str | None = None,
              labels: Mapping[str, str] | None = None, since_ms: int | None = None,
              until_ms: int | None = None, step_ms: int | None = None,
              agg: str = "avg") -> list[dict[str, Any]]: ...


@dataclass
class WatchedSeries:
    """One analysed series (node, metric, exact labels)."""

    node: str
    metric: str
    labels: dict[str, str]


Known = dict[str, WatchedSeries]
"""Every series a job was scheduled for, by key: what results are mapped back to."""


def series_key(node: str, metric: str, labels: Mapping[str, str]) -> str:
    """`node|metric|k=v,...` (labels sorted)."""
    return f"{node}|{metric}|" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def selected(labels: Mapping[str, str], want: Mapping[str, str | None]) -> bool:
    """Whether a series' labels have the required values (None: the label is absent)."""
    return all(labels.get(k) == v for k, v in want.items())


def select_watched(store: NewPointsReader) -> Selection[WatchedSeries]:
    """The watched series (WATCHED) and each node's NODE_VECTOR column series, from memory."""
    watched = []
    for metric, want in WATCHED.items():
        for row in store.series_of(metric):
            if row.node != ANALYTICS_NODE and selected(row.labels, want):
                key = series_key(row.node, metric, row.labels)
                watched.append((key, WatchedSeries(row.node, metric, dict(row.labels)), row.id))
    columns: dict[str, list[list[int]]] = {}
    for c, (metric, want) in enumerate(NODE_VECTOR):
        for row in store.series_of(metric):
            if row.node != ANALYTICS_NODE and selected(row.labels, want):
                cols = columns.setdefault(row.node, [[] for _ in NODE_VECTOR])
                cols[c].append(row.id)
    nodes = {node: [tuple(ids) for ids in cols] for node, cols in sorted(columns.items())
             if all(cols)}  # a node without a series for some column has no rows
    return watched, nodes


def _history_start(book: JobBook, key: str, collection_interval: float) -> int:
    """The first timestamp a job for `key` needs: after its last scored point, or a window."""
    prev = book.state.get(key)
    if prev is not None:
        return prev[1] + 1
    return int((time.time() - MAX_HISTORY_POINTS * collection_interval) * 1000)


def schedule_detect(news: NewPoints[WatchedSeries], book: JobBook, known: Known,
                    acfg: AnalyticsConfig, collection_interval: float,
                    budget_s: float = SCHEDULE_BUDGET_SECS) -> int:
    """A detect job for each watched series with points it has not taken yet (one in flight
    per series); only those series are read, and only their new points. Returns how many
    series are left for another pass (the budget ran out)."""
    news.refresh()
    newest = news.newest([sid for _, _, sid in news.watched])
    wants, top = [], {}
    for (key, s, sid), last in zip(news.watched, newest, strict=True):
        known.setdefault(key, s)
        if key in book.in_flight:
            continue
        since = _history_start(book, key, collection_interval)
        if news.is_new(key, last, since):
            wants.append(Want(key, (sid,), since))
            top[key] = last
    left = len(wants)
    for want, points in news.read(wants, budget_s):
        left -= 1
        key = want.key
        ts, vals = points[want.ids[0]]
        ts, vals = ts[-MAX_HISTORY_POINTS:], vals[-MAX_HISTORY_POINTS:]
        news.took(key, max(ts[-1] if ts else NO_TS, top[key]))
        if not ts or (key not in book.state and len(ts) < acfg.window_size // 4):
            continue  # nothing new, or not enough history to say anything yet
        job = book.detect_job(key, np.array(ts, dtype=np.int64),
                              np.array(vals, dtype=np.float64),
                              model=acfg.detector, warmup=max(0, len(ts) - 30))
        if job is not None:
            book.submit(job)
    return left


def schedule_node_detect(news: NewPoints[WatchedSeries], book: JobBook, known: Known,
                         acfg: AnalyticsConfig, collection_interval: float,
                         budget_s: float = SCHEDULE_BUDGET_SECS) -> int:
    """A node job per node with new ticks: rows of NODE_VECTOR values at the timestamps
    every column has, for `analytics.node_detector`; only nodes with new ticks are read.
    Returns how many nodes are left for another pass."""
    news.refresh()
    nodes = list(news.node_columns.items())
    flat = [sid for _, cols in nodes for ids in cols for sid in ids]
    newest = iter(news.newest(flat))
    wants, top, node_of = [], {}, {}
    for node, cols in nodes:
        # A row needs every column: the node's newest row is at most its slowest column's.
        last = min(max(next(newest) for _ in ids) for ids in cols)
        key = series_key(node, NODE_VECTOR_METRIC, {})
        known.setdefault(key, WatchedSeries(node, NODE_VECTOR_METRIC, {}))
        if key in book.in_flight:
            continue
        since = _history_start(book, key, collection_interval)
        if news.is_new(key, last, since):
            wants.append(Want(key, tuple(sid for ids in cols for sid in ids), since))
            top[key], node_of[key] = last, node
    left = len(wants)
    for want, points in news.read(wants, budget_s):
        left -= 1
        key = want.key
        cols = news.node_columns[node_of[key]]
        columns = []
        for ids in cols:
            column: dict[int, float] = {}
            for sid in ids:
                column.update(zip(*points[sid], strict=True))
            columns.append(column)
        common = sorted(set.intersection(*(set(c) for c in columns)))[-MAX_HISTORY_POINTS:]
        news.took(key, max(common[-1] if common else NO_TS, top[key]))
        if not common or (key not in book.state and len(common) < acfg.window_size // 4):
            continue
        rows = np.array([[c[t] for c in columns] for t in common], dtype=np.float64)
        job = book.detect_job(key, np.array(common, dtype=np.int64), rows,
                              model=acfg.node_detector, warmup=max(0, len(common) - 30))
        if job is not None:
            book.submit(job)
    return left


def schedule_forecasts(store: SeriesReader, book: JobBook, known: Known,
                       acfg: AnalyticsConfig) -> None:
    """A forecast job per series of every `prediction_config` entry with enough history (one
    stepped read per metric for all its series, not one per series)."""
    now_ms = int(time.time() * 1000)
    by_metric: dict[str, dict[str, tuple[WatchedSeries, list[int], list[float]]]] = {}
    for name, target in acfg.prediction_config.items():
        metric, want = PREDICTED.get(name, (name, {}))
        if metric not in by_metric:
            by_metric[metric] = per_series(metric, store.query(
                metric, since_ms=now_ms - 24 * 3600_000, step_ms=60_000, agg="avg"))
        for key, (s, ts, vals) in by_metric[metric].items():
            if s.node == ANALYTICS_NODE or not selected(s.labels, want) or len(ts) < 10:
                continue
            known.setdefault(key, s)
            book.submit(book.forecast_job(
                f"{key}|{name}", np.array(ts, dtype=np.int64), np.array(vals, dtype=np.float64),
                horizon=int(target.horizon_hours * 60), thresholds=[target.alert_threshold]))


def per_series(metric: str, rows: list[dict[str, Any]]
               ) -> dict[str, tuple[WatchedSeries, list[int], list[float]]]:
    """Rows of one metric's stepped query, split per series (key order), in time order."""
    out: dict[str, tuple[WatchedSeries, list[int], list[float]]] = {}
    for r in sorted(rows, key=lambda r: (series_key(r["node"], metric, r["labels"]),
                                         r["ts_ms"])):
        key = series_key(r["node"], metric, r["labels"])
        _, ts, vals = out.setdefault(key, (WatchedSeries(r["node"], metric, dict(r["labels"])),
                                           [], []))
        ts.append(r["ts_ms"])
        vals.append(r["value"])
    return out
