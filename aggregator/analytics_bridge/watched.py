"""Which stored series the bridge analyses, and the store queries that turn them into jobs.

`WATCHED` (anomaly detection per series), `NODE_VECTOR` (one multivariate model per node,
`analytics.node_detector`) and `PREDICTED` (the seed's `prediction_config` names) are the tables;
`watched_series` lists the stored series they select, and the `schedule_*` functions read each
one's new points from the store and submit a job to the `JobBook`. A series is keyed
`node|metric|k=v,...` (`series_key`) everywhere: job ids, model files, bands, retrain requests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from legion.aggregator.analytics_bridge.jobs import JobBook
from legion.analytics.config import AnalyticsConfig

ANALYTICS_NODE = "analytics"
"""The node of the result series (and never itself analysed)."""
MAX_HISTORY_POINTS = 2000

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


class SeriesReader(Protocol):
    """The part of `Store` the bridge reads."""

    def series(self, node: str | None = None, metric: str | None = None
               ) -> list[dict[str, Any]]: ...

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


def _selected(labels: Mapping[str, str], want: Mapping[str, str | None]) -> bool:
    return all(labels.get(k) == v for k, v in want.items())


def watched_series(store: SeriesReader) -> list[tuple[str, WatchedSeries]]:
    """(key, series) of every stored series watched for anomalies (WATCHED)."""
    out = []
    for row in store.series():
        want = WATCHED.get(row["metric"])
        labels = row["labels"]
        if want is None or row["node"] == ANALYTICS_NODE or not _selected(labels, want):
            continue
        key = series_key(row["node"], row["metric"], labels)
        out.append((key, WatchedSeries(row["node"], row["metric"], dict(labels))))
    return out


def _history_start(book: JobBook, key: str, collection_interval: float) -> int:
    """The first timestamp a job for `key` needs: after its last scored point, or a window."""
    prev = book.state.get(key)
    if prev is not None:
        return prev[1] + 1
    return int((time.time() - MAX_HISTORY_POINTS * collection_interval) * 1000)


def schedule_detect(store: SeriesReader, book: JobBook, known: Known, acfg: AnalyticsConfig,
                    collection_interval: float) -> None:
    """A detect job for each watched series with new points (one in flight per series)."""
    for key, found in watched_series(store):
        s = known.setdefault(key, found)
        if key in book.in_flight:
            continue
        fresh = key not in book.state
        since = _history_start(book, key, collection_interval)
        pts = [p for p in store.query(s.metric, node=s.node, labels=s.labels,
                                      since_ms=since) if p["labels"] == s.labels]
        pts = pts[-MAX_HISTORY_POINTS:]
        if not pts or (fresh and len(pts) < acfg.window_size // 4):
            continue  # nothing new, or not enough history to say anything yet
        job = book.detect_job(key, np.array([p["ts_ms"] for p in pts], dtype=np.int64),
                              np.array([p["value"] for p in pts], dtype=np.float64),
                              model=acfg.detector, warmup=max(0, len(pts) - 30))
        if job is not None:
            book.submit(job)


def schedule_node_detect(store: SeriesReader, book: JobBook, known: Known,
                         acfg: AnalyticsConfig, collection_interval: float) -> None:
    """A node job per node with new ticks: rows of NODE_VECTOR values at the timestamps
    every column has, for `analytics.node_detector`."""
    nodes = sorted({r["node"] for r in store.series(metric=NODE_VECTOR[0][0])
                    if r["node"] != ANALYTICS_NODE})
    for node in nodes:
        key = series_key(node, NODE_VECTOR_METRIC, {})
        known.setdefault(key, WatchedSeries(node, NODE_VECTOR_METRIC, {}))
        if key in book.in_flight:
            continue
        fresh = key not in book.state
        since = _history_start(book, key, collection_interval)
        columns = []
        for metric, want in NODE_VECTOR:
            pts = store.query(metric, node=node, since_ms=since)
            columns.append({p["ts_ms"]: p["value"] for p in pts if _selected(p["labels"], want)})
        common = sorted(set.intersection(*(set(c) for c in columns)))[-MAX_HISTORY_POINTS:]
        if not common or (fresh and len(common) < acfg.window_size // 4):
            continue
        rows = np.array([[c[t] for c in columns] for t in common], dtype=np.float64)
        job = book.detect_job(key, np.array(common, dtype=np.int64), rows,
                              model=acfg.node_detector, warmup=max(0, len(common) - 30))
        if job is not None:
            book.submit(job)


def schedule_forecasts(store: SeriesReader, book: JobBook, known: Known,
                       acfg: AnalyticsConfig) -> None:
    """A forecast job per series of every `prediction_config` entry with enough history."""
    now_ms = int(time.time() * 1000)
    for name, target in acfg.prediction_config.items():
        metric, want = PREDICTED.get(name, (name, {}))
        for row in store.series(metric=metric):
            labels = row["labels"]
            if row["node"] == ANALYTICS_NODE or not _selected(labels, want):
                continue
            pts = store.query(metric, node=row["node"], labels=labels,
                              since_ms=now_ms - 24 * 3600_000, step_ms=60_000, agg="avg")
            pts = [p for p in pts if p["labels"] == labels]
            if len(pts) < 10:
                continue
            key = series_key(row["node"], metric, labels)
            known.setdefault(key, WatchedSeries(row["node"], metric, dict(labels)))
            book.submit(book.forecast_job(
                f"{key}|{name}", np.array([p["ts_ms"] for p in pts], dtype=np.int64),
                np.array([p["value"] for p in pts], dtype=np.float64),
                horizon=int(target.horizon_hours * 60),
                thresholds=[target.alert_threshold]))
