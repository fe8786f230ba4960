"""`Store`'s query side (any thread): what is stored (nodes, series, seq runs), stepped and raw
queries (from the query head, else DuckDB through query.py), `latest`, top-k, sizes.

`QueryMethods` is a base class of `Store` (store.py keeps the writer thread's side: writes,
rounds, checkpoints); it reads the state `Store.__init__` makes, declared below.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import packing, rate, retention, rollup
from legion.aggregator.store import query as q
from legion.aggregator.store.head import QueryHead
from legion.aggregator.store.schema import TIERS
from legion.aggregator.store.seqindex import FIRST_SEQ, SeqIndex
from legion.aggregator.store.writer import NO_TS, StoreWriter, labels_key
from legion.kernel.errors import QueryError


class QueryMethods:
    """The query methods of `Store`: each query uses its own cursor (`_cursor`) or reads the
    writer's memory under `_lock`."""

    path: Path
    config: StorageConfig
    head: QueryHead | None
    rejected_seqs: SeqIndex
    rollup_errors: int
    _lock: threading.Lock
    _writer: StoreWriter
    _selections: dict[tuple[Any, ...], tuple[int, list[q.SeriesRow]]]
    _kept_cache: dict[str, int]

    def _cursor(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        raise NotImplementedError  # Store's

    def nodes(self) -> list[dict[str, Any]]:
        """Per-node info: first/last seen, points, epoch, last_seq, missing, dropped."""
        with self._lock:
            infos = sorted(self._writer.nodes.values(), key=lambda n: n.node)
            rejected = {n.node: self.rejected_seqs.count(n.node, n.epoch, FIRST_SEQ, n.last_seq)
                        for n in infos}
            missing = {n.node: max(0, self._writer.seqs.missing(n.node, n.epoch, n.last_seq)
                                   - rejected[n.node]) for n in infos}
        return [{"node": n.node, "first_seen_ms": n.first_seen_ms, "last_seen_ms": n.last_seen_ms,
                 "points": n.points, "epoch": n.epoch, "last_seq": n.last_seq,
                 "missing": missing[n.node], "rejected": rejected[n.node],
                 "dropped": n.dropped} for n in infos]

    def has_series(self, key: tuple[str, str, Any]) -> bool:
        """Whether the series (node, name, labels) is stored (the writer thread's view)."""
        return key in self._writer.series

    def series_counts(self) -> tuple[Counter[str], Counter[str]]:
        """Stored series per node and per metric name."""
        with self._lock:
            keys = list(self._writer.series)
        return Counter(k[0] for k in keys), Counter(k[1] for k in keys)

    def stored_ranges(self, node: str, epoch: int) -> list[tuple[int, int]]:
        """Inclusive (first, last) runs of stored seqs for one node and epoch."""
        with self._lock:
            return self._writer.seqs.ranges(node, epoch)

    def series(self, node: str | None = None, metric: str | None = None) -> list[dict[str, Any]]:
        """Series: id, node, metric, labels (dict)."""
        with self._cursor() as cur:
            return [{"id": s.id, "node": s.node, "metric": s.metric, "labels": s.labels}
                    for s in q.select_series(cur, metric=metric, node=node)]

    def query(self, metric: str, node: str | None = None,
              labels: Mapping[str, str] | None = None, since_ms: int | None = None,
              until_ms: int | None = None, step_ms: int | None = None, agg: str = "avg",
              group_by: str | None = None) -> list[dict[str, Any]]:
        """Raw points, or with a step one value per series (or group) per step bucket.

        `group_by` (needs a step): label keys and/or "node", comma-separated ("node,cpu"), or
        "*" (all matching series together); each group aggregates all its series' points.
        `agg`: avg|min|max|sum|count|last, p50|p95|p99 (computed from raw points), or rate
        (per-second increase of a counter per step, resets handled; grouped: summed).
        """
        if group_by is not None and step_ms is None:
            raise QueryError("group_by needs a step")
        if agg == rate.RATE:
            return rate.query_rate(self, metric, node, labels, since_ms, until_ms, step_ms,
                                   group_by)
        sel = self._select(metric, node, labels)
        from_head = self._from_head(metric, sel, step_ms, agg, since_ms, until_ms, group_by,
                                    wait=True)
        if from_head is not None:
            return from_head
        with self._cursor() as cur:
            if step_ms is None:
                rows = q.raw_points(cur, sel, since_ms, until_ms, self._kept(cur)["raw"])
                meta = {s.id: (s.node, dict(s.labels)) for s in sel}
                return [{"ts_ms": t, "node": meta[i][0], "metric": metric,
                         "labels": meta[i][1], "value": v} for i, t, v in rows]
            _, rows2 = q.stepped(cur, sel, step_ms, agg, since_ms, until_ms, self._kept(cur),
                                 group_by, tiers=self.config.rollups_enabled)
        return self._shape(metric, sel, group_by, rows2)

    def query_now(self, metric: str, node: str | None = None,
                  labels: Mapping[str, str] | None = None, since_ms: int | None = None,
                  until_ms: int | None = None, step_ms: int | None = None, agg: str = "avg",
                  group_by: str | None = None) -> list[dict[str, Any]] | None:
        """`query`'s rows when the loaded query head holds them and they are small (head.py
        `NOW_MAX_CELLS`), else None (then call `query`, off the event loop). Never waits: not
        on DuckDB, not on a lock a write holds, so the gateway calls it on its event loop."""
        try:
            sel = self._select(metric, node, labels, wait=False)
        except _Busy:
            return None
        return self._from_head(metric, sel, step_ms, agg, since_ms, until_ms, group_by,
                               wait=False)

    def _from_head(self, metric: str, sel: list[q.SeriesRow], step_ms: int | None, agg: str,
                   since_ms: int | None, until_ms: int | None, group_by: str | None,
                   wait: bool) -> list[dict[str, Any]] | None:
        """The one decision whether the query head answers a query (`query` and `query_now`):
        its rows, or None (DuckDB's turn). `wait` True loads the head if the range could use
        it; False never loads (only `query`, on a worker thread, does) and never waits for a
        write (`QueryHead.stepped`)."""
        head = self.head
        if head is None or step_ms is None or agg == rate.RATE or (
                not wait and head.start is None):
            return None
        # `_refresh_kept` replaces the dict, never changes it: reading it needs no lock
        rows = head.stepped(sel, step_ms, agg, since_ms, until_ms, self._kept_cache, group_by,
                            self._load_head if wait else None, wait=wait)
        return None if rows is None else self._shape(metric, sel, group_by, rows)

    def plan(self, step_ms: int | None, agg: str = "avg", since_ms: int | None = None,
             until_ms: int | None = None) -> str:
        """Which source ('raw', '1m', '1h', '1d') a stepped query would read."""
        with self._cursor() as cur:
            kept = self._kept(cur)
        lo = None if since_ms is None or step_ms is None else since_ms // step_ms * step_ms
        hi = None if until_ms is None or step_ms is None else -(-until_ms // step_ms) * step_ms
        if step_ms is None:
            lo, hi = since_ms, until_ms
        return q.plan(step_ms, agg, lo, hi, kept, whole=step_ms is None,
                      tiers=self.config.rollups_enabled).source

    def horizon_ms(self, step_ms: int | None, agg: str = "avg") -> int:
        """The earliest time a query with this step and aggregation may start at: the
        retention horizon of the source it reads (`plan`); 0 when nothing was deleted yet."""
        kept = self._kept()
        return kept.get(q.plan(step_ms, agg, None, None, kept, whole=step_ms is None,
                               tiers=self.config.rollups_enabled).source, 0)

    def topk(self, metric: str, k: int = 10, agg: str = "avg", node: str | None = None,
             labels: Mapping[str, str] | None = None, since_ms: int | None = None,
             until_ms: int | None = None, bottom: bool = False) -> list[dict[str, Any]]:
        """The k series with the highest (or lowest) `agg` over the range."""
        with self._cursor() as cur:
            sel = self._select(metric, node, labels)
            _, rows = q.stepped(cur, sel, None, agg, since_ms, until_ms, self._kept(cur),
                                tiers=self.config.rollups_enabled)
        shaped = self._shape(metric, sel, None, rows)
        shaped.sort(key=lambda r: r["value"], reverse=not bottom)
        for r in shaped:
            r.pop("ts_ms", None)
        return shaped[:max(0, k)]

    def latest(self, metric_glob: str = "*", node: str | None = None) -> list[dict[str, Any]]:
        """Newest point of every series whose metric matches the glob, ordered by node, metric
        and labels. Served from the writer's memory (series ids and newest points), no SQL."""
        match = re.compile(fnmatch.translate(metric_glob)).match
        w = self._writer
        with self._lock:
            keys = sorted(k for name, ks in w.by_name.items() if match(name) for k in ks
                          if node is None or k[0] == node)
            ts, val = w.latest_of(np.fromiter((w.series[k] for k in keys), np.int64, len(keys)))
        return [{"ts_ms": t, "node": k[0], "metric": k[1], "labels": dict(k[2]), "value": v}
                for k, t, v in zip(keys, ts, val, strict=True) if t != NO_TS]

    def series_count(self) -> int:
        """How many series are stored: grows when one is created (a cheap change signal)."""
        return len(self._writer.keys)

    def series_of(self, metric: str) -> list[q.SeriesRow]:
        """The series (id, node, metric, labels) of one metric, from the writer's memory."""
        return self._select(metric, None, None)

    def newest_ts(self, ids: Sequence[int]) -> list[int]:
        """Newest stored timestamp of each series id, from memory (NO_TS where none)."""
        with self._lock:
            ts, _ = self._writer.latest_of(np.asarray(ids, np.int64))
        return ts

    def raw_since(self, ids: Sequence[int], since_ms: int) -> list[tuple[int, int, float]]:
        """Raw (series_id, ts, value) of these series from `since_ms` on (raised to the raw
        horizon), ordered by series then time, in one statement."""
        sel = [q.SeriesRow(int(i), "", "", {}) for i in ids]
        with self._cursor() as cur:
            kept = self._kept(cur)["raw"]
            return q.raw_points(cur, sel, max(since_ms, kept), None, kept)

    def stats(self) -> dict[str, Any]:
        """Sizes and horizons: rows per table, bytes on disk, kept_since per tier."""
        with self._cursor() as cur:
            rows = {t: int(cur.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0])
                    for t in ("series", "points", "late_points", "batches", "batch_runs",
                              "dirty_minutes",
                              *(f"rollup_{t}" for t in TIERS))}
            kept = self._kept(cur)
            rows.update(packing.packed_stats(cur))
        return {"rows": rows, "kept_since_ms": kept, "bytes": retention.disk_bytes(self.path),
                "rollup_errors": self.rollup_errors}

    def _select(self, metric: str, node: str | None,
                labels: Mapping[str, str] | None, wait: bool = True) -> list[q.SeriesRow]:
        """`query.select_series` for one metric, from the writer's memory (no statement), in
        the same order (node, metric, labels_key); `wait` False: `_Busy` if a write holds
        the lock. The rows are remembered and shared between calls: their labels are read
        only (answers copy them)."""
        want = [(str(k), str(v)) for k, v in (labels or {}).items()]
        # Series are only ever added: a selection stays right while the count is unchanged.
        memo_key = (metric, node, tuple(sorted(want)))
        if not self._lock.acquire(blocking=wait):
            raise _Busy
        try:
            version = len(self._writer.keys)
            hit = self._selections.get(memo_key)
            if hit is None or hit[0] != version:
                keys = [k for k in self._writer.by_name.get(metric, ())
                        if (node is None or k[0] == node) and all(p in k[2] for p in want)]
                ids = [self._writer.series[k] for k in keys]
                if len(self._selections) >= 1024:
                    self._selections.clear()
                hit = self._selections[memo_key] = (version, [
                    q.SeriesRow(sid, k[0], k[1], dict(k[2])) for k, sid in sorted(
                        zip(keys, ids, strict=True),
                        key=lambda ki: (ki[0][0], labels_key(ki[0][2])))])
        finally:
            self._lock.release()
        return list(hit[1])

    def _shape(self, metric: str, sel: list[q.SeriesRow], group_by: str | None,
               rows: list[tuple[Any, int, float]]) -> list[dict[str, Any]]:
        if group_by is None:
            meta = {str(s.id): (s.node, dict(s.labels)) for s in sel}
            return [{"ts_ms": b, "node": meta[g][0], "metric": metric,
                     "labels": meta[g][1], "value": v} for g, b, v in rows]
        keys = q.group_keys(group_by)
        out = []
        for g, b, v in rows:
            values = dict(zip(keys, g.split(q.GROUP_SEP), strict=True)) if keys else {}
            node = values.pop("node", None)
            out.append({"ts_ms": b, "node": node, "metric": metric, "labels": values,
                        "value": v})
        return out

    def _load_head(self, lo: int) -> None:
        """Fill the query head from the file while no write runs (the first query's cost);
        not for a range starting before the newest minutes it could hold (a query over days
        would pay the load and still read DuckDB)."""
        head = self.head
        assert head is not None
        with head.gate:
            if head.start is not None:
                return
            with self._lock:
                cap = max(self._writer.series.values(), default=0) + 1
                newest = self._writer.newest_ms()
            if lo < newest - head.max_minutes(cap) * rollup.MINUTE_MS:
                return
            with self._cursor() as cur:
                head.load(cur, cap)

    def _kept(self, cur: duckdb.DuckDBPyConnection | None = None) -> dict[str, int]:
        """Retention horizons per tier (cached; only `maintain` moves them)."""
        with self._lock:
            return dict(self._kept_cache)


class _Busy(Exception):
    """A lock the caller would not wait for was held (`Store.query_now`)."""
