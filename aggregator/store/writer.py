"""The write path's state: series ids, stored seqs, node info and the newest point per series,
kept in memory beside the file; one transaction per `write` (its statements: transaction.py),
exactly-once batches."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Collection, Sequence
from itertools import count
from typing import Any

import duckdb
import numpy as np

from legion.aggregator.store import chunk_rows, packing, rollup
from legion.aggregator.store.seqindex import SeqIndex
from legion.aggregator.store.transaction import SeriesKey, write_transaction
from legion.aggregator.store.transaction import labels_key as labels_key  # store.py's
from legion.aggregator.store.types import BatchKey, IncomingBatch, NodeInfo, WriteResult
from legion.kernel.errors import StoreError
from legion.proto import Labels

DROPPED_METRIC = "legion_agent_batches_dropped_total"
"""The agent's self-metric whose latest value is reported as the node's `dropped`."""

MAX_SHAPES = 4096
NO_TS = np.iinfo(np.int64).min

# Stored seqs: the recent `batches` rows as runs, and the runs older rows were folded into
# (`batch_fold.py`); SeqIndex merges overlapping and adjacent runs.
_LOAD_RANGES = """
SELECT node, epoch, min(seq), max(seq) FROM (
    SELECT node, epoch, seq, seq - row_number() OVER (PARTITION BY node, epoch ORDER BY seq) AS g
    FROM (SELECT DISTINCT node, epoch, seq FROM batches))
GROUP BY node, epoch, g
UNION ALL
SELECT node, epoch, first_seq, last_seq FROM batch_runs"""

# Per-node bookkeeping at open, from the batches themselves (written in every commit anyway) and
# the runs old ones were folded into: no `nodes` row to rewrite per commit. `dropped` comes
# from the points (`_load_dropped`).
_LOAD_NODES = """
WITH b AS (
    SELECT node, epoch, seq AS last_seq, points, received_ms AS first_ms, received_ms AS last_ms
    FROM batches
    UNION ALL
    SELECT node, epoch, last_seq, points, first_ms, last_ms FROM batch_runs)
SELECT b.node, min(b.first_ms), max(b.last_ms), sum(b.points), e.epoch,
       max(b.last_seq) FILTER (WHERE b.epoch = e.epoch)
FROM b JOIN (SELECT node, max(epoch) AS epoch FROM b GROUP BY node) e USING (node)
GROUP BY b.node, e.epoch"""

# Newest point per series at open: the 1m tier has every series up to the last rollup pass; raw
# covers the last hour and whatever minutes are still waiting for a pass.
_LOAD_LATEST = """
SELECT series_id, max(ts) AS ts, arg_max(value, ts) AS value FROM (
    SELECT series_id, last_ts AS ts, last AS value FROM rollup_1m
    UNION ALL
    SELECT series_id, ts, value FROM points
    WHERE ts >= (SELECT coalesce(max(ts), 0) - 3600000 FROM points)
       OR ts // 60000 IN (SELECT minute FROM dirty_minutes))
GROUP BY series_id"""


class StoreWriter:
    """Owns the write connection's in-memory state: series ids, stored seqs, node info."""

    def __init__(self, con: duckdb.DuckDBPyConnection, lock: threading.Lock,
                 rollups: bool = True) -> None:
        self._con = con
        self._lock = lock  # guards what readers see: nodes, seqs
        self.rollups = rollups
        self.series: dict[SeriesKey, int] = {}
        self.keys: dict[int, SeriesKey] = {}  # the inverse of `series`, for commit notices
        self.by_name: dict[str, list[SeriesKey]] = {}  # series per metric name (`latest`)
        self.last_write: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.head_rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # for the head
        self.seqs = SeqIndex()
        self.nodes: dict[str, NodeInfo] = {}
        self._dropped_ts: dict[str, int] = {}
        self.raw_kept_since_ms = 0
        self.late_ms = 0  # points older than this belong to packed windows (packing.late_horizon)
        self.dirty: set[int] = set()  # mirrors dirty_minutes (committed rows only)
        self._latest_ts = np.full(1024, NO_TS, np.int64)  # by series id: newest point
        self._latest_val = np.zeros(1024)
        self._next_id = count(1)
        self._shapes: dict[tuple[str, tuple[str, ...], tuple[Labels, ...]], np.ndarray] = {}

    def load(self) -> None:
        """Load series ids, stored seq ranges and node info from the file."""
        con = self._con
        try:
            top = 0
            for sid, node, name, key in con.execute(
                    "SELECT id, node, name, labels_key FROM series").fetchall():
                skey = (node, name, tuple(tuple(p) for p in json.loads(key)))
                self.series[skey] = sid
                self.keys[sid] = skey
                self.by_name.setdefault(name, []).append(skey)
                top = max(top, sid)
            self._next_id = count(top + 1)
            self.seqs.load(con.execute(_LOAD_RANGES).fetchall())
            for node, first, last, points, epoch, last_seq in con.execute(
                    _LOAD_NODES).fetchall():
                self.nodes[node] = NodeInfo(node, int(first), int(last), int(points),
                                            int(epoch), int(last_seq), 0)
            self.raw_kept_since_ms = rollup.kept_since(con, "raw")
            self.dirty = {int(r[0]) for r in con.execute(
                "SELECT DISTINCT minute FROM dirty_minutes").fetchall()}
            self.late_ms = packing.late_horizon(con)
            if not self.rollups:
                # Packing waits for rollups, so with them on the 1m tier below is newer than any
                # chunk; with them off the chunks are the only record of older series.
                self._update_latest(*chunk_rows.newest_per_series(con))
            rows = con.execute(_LOAD_LATEST).fetchnumpy()
            order = np.argsort(rows["series_id"], kind="stable")
            self._update_latest(rows["series_id"][order].astype(np.int64),
                                rows["ts"][order].astype(np.int64),
                                rows["value"][order].astype(np.float64))
        except duckdb.Error as exc:
            raise StoreError(f"cannot load store state: {exc}") from exc
        self._load_dropped()

    def _load_dropped(self) -> None:
        """Each node's `dropped`: the newest value of its agent's DROPPED_METRIC series."""
        for skey in self.by_name.get(DROPPED_METRIC, ()):
            newest = self.latest(self.series[skey])
            info = self.nodes.get(skey[0])
            if newest is None or info is None or newest[0] < self._dropped_ts.get(skey[0], -1):
                continue
            self._dropped_ts[skey[0]] = newest[0]
            self.nodes[skey[0]] = dataclasses.replace(info, dropped=int(newest[1]))

    def write(self, batches: Sequence[IncomingBatch],
              in_head: Collection[BatchKey] = ()) -> WriteResult:
        """Store every batch not stored before, all in one transaction; `head_rows` are then
        the points stored of batches not in `in_head` (already fed to the query head)."""
        self.last_write = self.head_rows = None
        accepted: list[IncomingBatch] = []
        duplicates: list[BatchKey] = []
        seen: set[BatchKey] = set()
        for b in batches:
            k = (b.node, int(b.epoch), int(b.seq))
            if k in seen or self.seqs.contains(*k):
                duplicates.append(k)
            else:
                seen.add(k)
                accepted.append(b)
        if not accepted:
            return WriteResult((), tuple(duplicates), 0)
        new_series: dict[SeriesKey, int] = {}
        sid_parts = [self._series_ids(b, new_series) for b in accepted]
        sid = np.concatenate(sid_parts) if sid_parts else np.empty(0, np.int32)
        ts = np.concatenate([b.batch.ts_ms for b in accepted]).astype(np.int64, copy=False)
        val = np.concatenate([b.batch.values for b in accepted]).astype(np.float64, copy=False)
        # Sorted by (series, ts) within the commit: long runs per series compress and prune well.
        order = np.lexsort((ts, sid))
        sid, ts, val = sid[order], ts[order], val[order]
        fresh = None if not in_head else np.concatenate(
            [np.full(len(b.batch), b.key not in in_head) for b in accepted])[order]
        nodes = self._node_updates(accepted)
        try:
            self._transaction(accepted, new_series, sid, ts, val)
        except duckdb.Error as exc:
            if new_series:  # ids of series that were not stored are handed out again
                self._next_id = count(min(new_series.values()))
            raise StoreError(f"write of {len(accepted)} batches failed: {exc}") from exc
        with self._lock:
            self.series.update(new_series)
            self.keys.update((v, k) for k, v in new_series.items())
            for skey in new_series:
                self.by_name.setdefault(skey[1], []).append(skey)
            for b in accepted:
                self.seqs.add(b.node, int(b.epoch), int(b.seq))
            self.nodes.update(nodes)
            self._update_latest(sid, ts, val)
        self.last_write = self.head_rows = (sid, ts, val)
        if fresh is not None:
            self.head_rows = (sid[fresh], ts[fresh], val[fresh])
        return WriteResult(tuple(b.key for b in accepted), tuple(duplicates), int(ts.shape[0]))

    def _transaction(self, accepted: list[IncomingBatch], new_series: dict[SeriesKey, int],
                     sid: np.ndarray, ts: np.ndarray, val: np.ndarray) -> None:
        """The write's one transaction (transaction.py); the minutes it marked join `dirty`."""
        self.dirty.update(write_transaction(
            self._con, accepted, new_series, sid, ts, val,
            raw_kept_since_ms=self.raw_kept_since_ms, late_ms=self.late_ms,
            rollups=self.rollups, dirty=self.dirty))

    def resolved(self, b: IncomingBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """A batch's points as (series id, ts, value) sorted like a write's when every one of its
        series is stored and the batch is not (else None): what the query head may take before
        the batch's commit (`head_ahead.py`)."""
        mb = b.batch
        if not len(mb) or self.seqs.contains(b.node, int(b.epoch), int(b.seq)):
            return None
        table = self._table(b)
        sid: np.ndarray = table[mb.name_idx, mb.label_idx]
        if not sid.all():  # series committed since the table was made, or not stored yet
            unknown = sid == 0
            for n_i, l_i in set(zip(mb.name_idx[unknown].tolist(),
                                    mb.label_idx[unknown].tolist(), strict=True)):
                committed = self.series.get((b.node, mb.names[n_i], mb.label_sets[l_i]))
                if committed is None:
                    return None
                table[n_i, l_i] = committed
            sid = table[mb.name_idx, mb.label_idx]
        ts = mb.ts_ms.astype(np.int64, copy=False)
        order = np.lexsort((ts, sid))
        return sid[order], ts[order], mb.values.astype(np.float64, copy=False)[order]

    def newest_ms(self) -> int:
        """Timestamp of the newest point stored (0 when none)."""
        top = int(self._latest_ts.max()) if self._latest_ts.shape[0] else NO_TS
        return max(0, top)

    def latest(self, sid: int) -> tuple[int, float] | None:
        """Newest (ts, value) of a series, or None (call under the lock)."""
        if sid >= self._latest_ts.shape[0] or self._latest_ts[sid] == NO_TS:
            return None
        return int(self._latest_ts[sid]), float(self._latest_val[sid])

    def latest_of(self, sids: np.ndarray) -> tuple[list[int], list[float]]:
        """Newest ts and value of each series id (ts NO_TS where none; call under the lock)."""
        inside = sids < self._latest_ts.shape[0]
        ts = np.full(sids.shape[0], NO_TS, np.int64)
        val = np.zeros(sids.shape[0])
        ts[inside] = self._latest_ts[sids[inside]]
        val[inside] = self._latest_val[sids[inside]]
        return ts.tolist(), val.tolist()

    def last_write_rows(self) -> list[dict[str, Any]]:
        """The points of the last `write` that are now their series' newest, one per series,
        shaped like `Store.latest()` rows (built only when someone listens for commits)."""
        if self.last_write is None or not self.last_write[0].shape[0]:
            return []
        sid, ts, val = self.last_write
        ends = np.flatnonzero(np.r_[sid[1:] != sid[:-1], True])  # last of each (sorted) run
        s, t, v = sid[ends], ts[ends], val[ends]
        newest = t == self._latest_ts[s]
        out: list[dict[str, Any]] = []
        for i, t_i, v_i in zip(s[newest].tolist(), t[newest].tolist(), v[newest].tolist(),
                               strict=True):
            node, name, labels = self.keys[i]
            out.append({"ts_ms": t_i, "node": node, "metric": name, "labels": dict(labels),
                        "value": v_i})
        return out

    def _update_latest(self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray) -> None:
        """Keep the newest point per series in two arrays indexed by the (dense) series id."""
        if not sid.shape[0]:
            return
        top = int(sid.max()) + 1
        if top > self._latest_ts.shape[0]:
            size = max(top, 2 * self._latest_ts.shape[0])
            grown = np.full(size, NO_TS, np.int64)
            grown[:self._latest_ts.shape[0]] = self._latest_ts
            vals = np.zeros(size)
            vals[:self._latest_val.shape[0]] = self._latest_val
            self._latest_ts, self._latest_val = grown, vals
        ends = np.flatnonzero(np.r_[sid[1:] != sid[:-1], True])  # last of each (sorted) run
        s, t, v = sid[ends], ts[ends], val[ends]
        newer = t >= self._latest_ts[s]
        self._latest_ts[s[newer]] = t[newer]
        self._latest_val[s[newer]] = v[newer]

    def _series_ids(self, b: IncomingBatch, new: dict[SeriesKey, int]) -> np.ndarray:
        mb = b.batch
        if len(mb) == 0:
            return np.empty(0, np.int32)
        table = self._table(b)
        ids: np.ndarray = table[mb.name_idx, mb.label_idx]
        if ids.all():
            return ids
        unknown = ids == 0
        pending = np.zeros_like(table)  # ids handed out in this write, not yet committed
        # One dict lookup per unknown pair (no scan of `new` per batch): 10,000 new series in
        # one write cost tens of ms here, not seconds.
        for n_i, l_i in set(zip(mb.name_idx[unknown].tolist(), mb.label_idx[unknown].tolist(),
                                strict=True)):
            key = (b.node, mb.names[n_i], mb.label_sets[l_i])
            committed = self.series.get(key)
            if committed is not None:  # only committed ids go into the shared table
                table[n_i, l_i] = committed
            else:
                sid = new.get(key)
                if sid is None:
                    sid = new[key] = next(self._next_id)
                pending[n_i, l_i] = sid
        resolved: np.ndarray = np.where(table > 0, table, pending)[mb.name_idx, mb.label_idx]
        return resolved

    def _table(self, b: IncomingBatch) -> np.ndarray:
        """The batch's shape's table of committed series ids (0: none yet), made if new.

        An agent sends the same names and label sets every tick: one lookup table per shape
        turns series resolution into one numpy gather instead of a dict lookup per point."""
        mb = b.batch
        shape = (b.node, mb.names, mb.label_sets)
        table = self._shapes.get(shape)
        if table is None:
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()
            table = self._shapes[shape] = np.zeros((len(mb.names), len(mb.label_sets)), np.int32)
        return table

    def _node_updates(self, accepted: list[IncomingBatch]) -> dict[str, NodeInfo]:
        out: dict[str, NodeInfo] = {}
        for b in accepted:
            cur = out.get(b.node) or self.nodes.get(b.node)
            epoch, seq, rec = int(b.epoch), int(b.seq), int(b.received_ms)
            if cur is None:
                cur = NodeInfo(b.node, rec, rec, 0, epoch, seq, 0)
            last_epoch, last_seq = cur.epoch, cur.last_seq
            if epoch > last_epoch:
                last_epoch, last_seq = epoch, seq
            elif epoch == last_epoch:
                last_seq = max(last_seq, seq)
            cur = dataclasses.replace(
                cur, first_seen_ms=min(cur.first_seen_ms, rec),
                last_seen_ms=max(cur.last_seen_ms, rec), points=cur.points + len(b.batch),
                epoch=last_epoch, last_seq=last_seq, dropped=self._dropped(b, cur.dropped))
            out[b.node] = cur
        return out

    def _dropped(self, b: IncomingBatch, current: int) -> int:
        mb = b.batch
        if DROPPED_METRIC not in mb.names:
            return current
        mask = mb.name_idx == mb.names.index(DROPPED_METRIC)
        i = int(np.argmax(np.where(mask, mb.ts_ms, np.iinfo(np.int64).min)))
        ts = int(mb.ts_ms[i])
        if ts < self._dropped_ts.get(b.node, -1):
            return current
        self._dropped_ts[b.node] = ts
        return int(mb.values[i])
