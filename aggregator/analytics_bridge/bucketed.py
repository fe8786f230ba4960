"""Detect jobs on the worst value of fixed time buckets (`analytics.detect_step_secs`, issue 14).

Every detector was built and measured on rows 5 minutes apart, while agents sample every second.
Raw points would make each of its row constants (2000 points of history, 100 of warm-up, lags)
300 times shorter in time; on the synthetic node bench that meant 59 false alarms a day at a
10 s step against none at 300 s (docs/analytics.md, "Live detection on 5-minute maxima"). So,
with a step, every watched series (and every node vector) is scored on the max of each whole
step bucket (the min for a metric where low is bad, `watched.worst_of_bucket`), stamped at the
bucket's start (buckets are aligned to the epoch like every stepped query). The max keeps a
one-second spike visible in its bucket, the min a short dip of the success rate.

A bucket is scored once, after it has ended and `SETTLE_MS` more have passed (points in flight),
with one stepped query per metric (the store answers those from its rollup tiers). A point that
arrives for a bucket already scored is stored like any other but not scored again. A series
without a model yet gets up to `MAX_HISTORY_POINTS` buckets of history (as far back as the store
keeps them), and needs `window_size // 4` buckets before its first job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from legion.aggregator.analytics_bridge.jobs import JobBook
from legion.aggregator.analytics_bridge.new_points import NO_TS, NewPoints
from legion.aggregator.analytics_bridge.watched import (
    MAX_HISTORY_POINTS,
    NODE_VECTOR,
    NODE_VECTOR_METRIC,
    SCHEDULE_BUDGET_SECS,
    Known,
    SeriesReader,
    WatchedSeries,
    per_series,
    selected,
    series_key,
    worst_of_bucket,
)
from legion.analytics.config import AnalyticsConfig

SETTLE_MS = 15_000
"""A bucket is read this long after it ends: the points stamped inside it are stored by then."""
FEW_SERIES = 4
"""Up to this many series that need the same range are read one by one, more with one read."""
FIRST_SCORED = 30
"""A first job scores its newest buckets only; the ones before train the model."""

Buckets = dict[str, tuple[WatchedSeries, list[int], list[float]]]
"""Per series key: the series, its bucket starts and worst values, in time order."""


class StepReader(SeriesReader, Protocol):
    """The part of `Store` the bucketed scheduler reads."""

    def horizon_ms(self, step_ms: int | None, agg: str = "avg") -> int: ...


def score_lag_ms(detect_step_secs: float) -> int:
    """How much older than now a series' newest score can be while no newer one is due: its
    bucket, the next bucket and `SETTLE_MS` (0 for raw points, scored as they come)."""
    return 0 if detect_step_secs == 0 else int(2 * detect_step_secs * 1000) + SETTLE_MS


def whole_buckets_end(now_ms: int, step_ms: int) -> int:
    """The end (exclusive) of the settled whole buckets at `now_ms`."""
    return (now_ms - SETTLE_MS) // step_ms * step_ms


def history_start(store: StepReader, end_ms: int, step_ms: int) -> int:
    """The first bucket a model-less series reads: MAX_HISTORY_POINTS back, or the first whole
    bucket the store still keeps."""
    kept = store.horizon_ms(step_ms, "max")
    return max(end_ms - MAX_HISTORY_POINTS * step_ms, -(-kept // step_ms) * step_ms)


def stepped_worst(store: StepReader, metric: str, since_ms: int, end_ms: int, step_ms: int,
                  node: str | None = None, labels: Mapping[str, str] | None = None) -> Buckets:
    """The worst value of each bucket (`worst_of_bucket`) of a metric's series (or of those on
    `node` with `labels` among theirs) over [since_ms, end_ms), by series key."""
    return per_series(metric, store.query(metric, node=node, labels=labels, since_ms=since_ms,
                                          until_ms=end_ms, step_ms=step_ms,
                                          agg=worst_of_bucket(metric)))


class BucketedDetect:
    """Schedules bucketed detect jobs; remembers up to which bucket each key was handled."""

    def __init__(self, store: StepReader, news: NewPoints[WatchedSeries], book: JobBook,
                 known: Known, acfg: AnalyticsConfig) -> None:
        self.store, self.news, self.book, self.known, self.acfg = (store, news, book, known,
                                                                   acfg)
        self.step_ms = int(acfg.detect_step_secs * 1000)
        self.done: dict[str, int] = {}  # key -> end of the buckets it was last handled to
        self.queries = 0  # stepped reads, for tests and stats

    def schedule(self, now_ms: int | None = None, budget_s: float = SCHEDULE_BUDGET_SECS
                 ) -> int:
        """A job per watched series with a new whole bucket; returns how many metrics are left
        for another pass (the budget ran out)."""
        end, first = self._begin_pass(now_ms)
        newest = self.news.newest([sid for _, _, sid in self.news.watched])
        # metric -> first bucket to read -> the series that need it
        pending: dict[str, dict[int, list[tuple[str, WatchedSeries]]]] = {}
        for (key, s, _), last in zip(self.news.watched, newest, strict=True):
            self.known.setdefault(key, s)
            since = self._since(key, last, end, first)
            if since is not None:
                pending.setdefault(s.metric, {}).setdefault(since, []).append((key, s))
        deadline = time.monotonic() + budget_s
        left = len(pending)
        for metric, groups in pending.items():
            if left < len(pending) and time.monotonic() >= deadline:
                break
            left -= 1
            for since, series in groups.items():
                got = self._read_for(metric, since, end, [(s.node, s.labels) for _, s in series])
                for key, _ in series:
                    _, ts, vals = got.get(key, (None, [], []))
                    self._submit(key, ts, vals, self.acfg.detector)
                    self.done[key] = end
        return left

    def schedule_nodes(self, now_ms: int | None = None) -> int:
        """A job per node with a new whole bucket: rows of NODE_VECTOR bucket maxima at the
        buckets every column has. Nodes that need the same range are read like series
        (`_read_for`). Returns 0 (no budget: one pass reads every node)."""
        end, first = self._begin_pass(now_ms)
        cols = list(self.news.node_columns.items())
        newest = iter(self.news.newest([sid for _, c in cols for ids in c for sid in ids]))
        groups: dict[int, list[str]] = {}  # first bucket to read -> the nodes that need it
        for node, c in cols:
            # a row needs every column: the node's newest row is at most its slowest column's
            last = min(max(next(newest) for _ in ids) for ids in c)
            key = series_key(node, NODE_VECTOR_METRIC, {})
            self.known.setdefault(key, WatchedSeries(node, NODE_VECTOR_METRIC, {}))
            since = self._since(key, last, end, first)
            if since is not None:
                groups.setdefault(since, []).append(node)
        for since, nodes in groups.items():
            columns = [self._read_for(metric, since, end, [(n, None) for n in nodes])
                       for metric, _ in NODE_VECTOR]
            for node in nodes:
                per_column = [_column(got, node, metric, want)
                              for got, (metric, want) in zip(columns, NODE_VECTOR, strict=True)]
                common = sorted(set.intersection(*(set(c) for c in per_column)))
                rows = [[c[t] for c in per_column] for t in common]
                key = series_key(node, NODE_VECTOR_METRIC, {})
                self._submit(key, common, rows, self.acfg.node_detector)
                self.done[key] = end
        return 0

    def _begin_pass(self, now_ms: int | None) -> tuple[int, int]:
        """The watched set refreshed; (end of the settled whole buckets, `history_start`)."""
        end = whole_buckets_end(int(time.time() * 1000) if now_ms is None else now_ms,
                                self.step_ms)
        self.news.refresh()
        return end, history_start(self.store, end, self.step_ms)

    def _since(self, key: str, newest: int, end: int, first: int) -> int | None:
        """The first bucket `key` needs read, or None: handled up to `end` already, a job in
        flight, or no point stored since its last scored bucket (then it is handled). `first`:
        `history_start`, where a series without a model starts."""
        if key in self.book.in_flight or self.done.get(key, NO_TS) >= end:
            return None
        st = self.book.state.get(key)
        # a model's next bucket, unless the store no longer keeps it (an aggregator that was
        # down for longer than the retention): then as far back as a new series would read
        since = first if st is None else max(st[1] + self.step_ms, first)
        if newest == NO_TS or newest < since:
            self.done[key] = end  # a series that stopped reporting costs no read
            return None
        return since

    def _read_for(self, metric: str, since: int, end: int,
                  wanted: list[tuple[str, Mapping[str, str] | None]]) -> Buckets:
        """The buckets of `metric` from `since` for these (node, labels) selections: one read
        per selection when they are few (a new node's), else one read of the whole metric.
        Labels select by subset, so the answer may hold more series than asked for."""
        if len(wanted) > FEW_SERIES:
            return self._read(metric, since, end)
        got: Buckets = {}
        for node, labels in wanted:
            got.update(self._read(metric, since, end, node=node, labels=labels))
        return got

    def _read(self, metric: str, since: int, end: int, node: str | None = None,
              labels: Mapping[str, str] | None = None) -> Buckets:
        if since >= end:
            return {}
        self.queries += 1
        return stepped_worst(self.store, metric, since, end, self.step_ms, node, labels)

    def _submit(self, key: str, ts: Sequence[int], values: Sequence[float] | Sequence[list[float]],
                model: str) -> None:
        if not ts or (key not in self.book.state and len(ts) < self.acfg.window_size // 4):
            return  # nothing new, or not enough history to say anything yet
        job = self.book.detect_job(key, np.array(ts, dtype=np.int64),
                                   np.array(values, dtype=np.float64), model=model,
                                   warmup=max(0, len(ts) - FIRST_SCORED))
        if job is not None:
            self.book.submit(job)


def _column(got: Buckets, node: str, metric: str, want: Mapping[str, str | None]
            ) -> dict[int, float]:
    """One node's column: bucket -> the worst (`worst_of_bucket`) over its series that the
    column selects."""
    worst = min if worst_of_bucket(metric) == "min" else max
    column: dict[int, float] = {}
    for s, ts, vals in got.values():
        if s.node == node and selected(s.labels, want):
            for t, v in zip(ts, vals, strict=True):
                column[t] = worst(v, column.get(t, v))
    return column
