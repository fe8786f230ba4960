"""One write's statements, in one transaction: the new series, the points, the `batches` rows
(exactly-once), the minutes the rollups must recompute, and late points, from numpy columns.

Per commit of agents' batches that is BEGIN, points, batches, COMMIT: a commit's cost is nearly
all fixed (docs/peers.md), so the ingest writer gathers batches at low rates (`ingest.py`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence

import duckdb
import numpy as np

from legion.aggregator.store import columns, rollup
from legion.aggregator.store.types import IncomingBatch
from legion.proto import Labels

SeriesKey = tuple[str, str, Labels]

_LABELS_JSON = json.JSONEncoder(separators=(",", ":"))


def labels_key(labels: Labels) -> str:
    """Canonical text form of a label set (JSON of the sorted pairs).

    Plain printable ASCII without quotes or backslashes needs no escaping, so it is formatted
    directly (a third of the encoder's cost: this runs once per new series)."""
    text = "".join([k + v for k, v in labels])
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return "[" + ",".join(['["' + k + '","' + v + '"]' for k, v in labels]) + "]"
    return _LABELS_JSON.encode([list(p) for p in labels])


def write_transaction(con: duckdb.DuckDBPyConnection, accepted: Sequence[IncomingBatch],
                      new_series: Mapping[SeriesKey, int], sid: np.ndarray, ts: np.ndarray,
                      val: np.ndarray, *, raw_kept_since_ms: int, late_ms: int, rollups: bool,
                      dirty: Collection[int]) -> list[int]:
    """Store one write's points, new series and `batches` rows in one transaction (rolled back
    on any error, which is raised as it happened); returns the minutes it marked dirty (not in
    `dirty` before). Points older than `raw_kept_since_ms` (retention) and `late_ms` (packed
    windows) go to the tiers as partial rows instead."""
    # late points for data retention already dropped
    old_tbl, sid, ts, val = _split_older(raw_kept_since_ms, sid, ts, val)
    # Points of packed (or packing) windows go to `late_points`, never made dirty: their
    # minute cannot be recomputed from `points` alone, so they join the tiers as partial
    # rows instead; packing moves them into chunks later.
    late_tbl, sid, ts, val = _split_older(late_ms, sid, ts, val)
    fresh_minutes: list[int] = []
    if rollups and ts.shape[0]:
        fresh_minutes = [m for m in np.unique(ts // 60_000).tolist() if m not in dirty]
    # Read by name by the INSERTs below (replacement scans of local numpy columns,
    # columns.py): one statement each, cheaper than register/unregister (measured). Per
    # commit: BEGIN, points, batches, COMMIT; the node bookkeeping is not written (derived
    # from `batches` at open: _LOAD_NODES).
    _w_points = columns.points(sid, ts, val)  # noqa: F841
    rows = [(b.node, int(b.epoch), int(b.seq), len(b.batch), int(b.received_ms))
            for b in accepted]
    _w_batches = _batches_columns(rows) if len(rows) > 1 else None  # noqa: F841
    con.execute("BEGIN TRANSACTION")
    try:
        if new_series:
            _w_series = _series_columns(new_series, max(  # noqa: F841
                b.received_ms for b in accepted))
            con.execute("INSERT INTO series SELECT id, node, name, labels_key, "
                        "map(lk::VARCHAR[], lv::VARCHAR[]), created_ms FROM _w_series")
        if ts.shape[0]:
            con.execute("INSERT INTO points SELECT * FROM _w_points")
        if _w_batches is None:  # one batch (one agent's tick): parameters, no table
            con.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?)", list(rows[0]))
        else:
            con.execute("INSERT INTO batches SELECT * FROM _w_batches")
        if fresh_minutes:  # minutes already marked (the usual case) cost no statement
            _w_minutes = {"minute": np.asarray(fresh_minutes, np.int64)}  # noqa: F841
            con.execute("INSERT INTO dirty_minutes SELECT * FROM _w_minutes")
        if rollups and old_tbl is not None:
            rollup.merge_partials(con, old_tbl)
        if late_tbl is not None:
            con.execute("INSERT INTO late_points SELECT * FROM late_tbl")
            if rollups:
                rollup.merge_partials(con, late_tbl)
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    return fresh_minutes



def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failed statement, keeping the error that actually happened: a failed
    COMMIT has already ended the transaction, and its ROLLBACK would raise "no transaction is
    active" in place of the real cause."""
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass


def _series_columns(new: Mapping[SeriesKey, int], now_ms: int) -> columns.Columns:
    """New `series` rows, labels as key and value lists (lk, lv) that the INSERT maps."""
    keys = list(new)
    return {"id": np.asarray([new[k] for k in keys], np.int32),
            "node": columns.objects([k[0] for k in keys]),
            "name": columns.objects([k[1] for k in keys]),
            "labels_key": columns.objects([labels_key(k[2]) for k in keys]),
            "lk": columns.objects([[p[0] for p in k[2]] for k in keys]),
            "lv": columns.objects([[p[1] for p in k[2]] for k in keys]),
            "created_ms": np.full(len(keys), now_ms, np.int64)}


def _batches_columns(rows: list[tuple[str, int, int, int, int]]) -> columns.Columns:
    """`batches` rows (node, epoch, seq, points, received_ms) as columns."""
    node, epoch, seq, points, received = zip(*rows, strict=True)
    return {"node": columns.objects(node), "epoch": np.asarray(epoch, np.int64),
            "seq": np.asarray(seq, np.int64), "points": np.asarray(points, np.int32),
            "received_ms": np.asarray(received, np.int64)}


def _split_older(horizon_ms: int, sid: np.ndarray, ts: np.ndarray, val: np.ndarray
                 ) -> tuple[columns.Columns | None, np.ndarray, np.ndarray, np.ndarray]:
    """Points older than `horizon_ms` as a (series_id, ts, value) table (None when there are
    none), and the other points."""
    older = ts < horizon_ms
    if not older.any():
        return None, sid, ts, val
    return columns.points(sid[older], ts[older], val[older]), sid[~older], ts[~older], val[~older]
