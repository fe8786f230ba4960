"""A chunk table's rows: points of a series and UTC hour encoded as one `chunkcodec` blob
(`encode_chunks`), and decoded back (`read_chunks`, `newest_per_series`).

A run whose timestamps equal an earlier run's of the same hour (the series of one agent tick)
stores none of its own and names that run's chunk (`ts_from`); readers decode the shared
timeline once.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np

from legion.aggregator.store import chunkcodec, columns
from legion.aggregator.store.chunk_tables import HOUR_MS, ChunkTable, chunk_tables
from legion.kernel.errors import StoreError

PIECE_BYTES = 4000
"""A chunk's blob is stored as a list of pieces of at most this many bytes. DuckDB keeps strings
under 4 KiB inline and larger ones in overflow blocks, and a column mixing both wasted 33 % of
its blocks here (1.33 bytes on disk per byte of blob; 1.02-1.04 with all pieces inline)."""


def encode_chunks(sid: np.ndarray, ts: np.ndarray, values: np.ndarray,
                  first_id: int = 0) -> columns.Columns:
    """One chunk row per series and UTC hour of points sorted by (series_id, ts), with ids from
    `first_id`. A run whose timestamps equal an earlier run's of the same hour (the series of
    one agent tick) stores none and points at that run (`ts_from`)."""
    sid = np.asarray(sid, np.int64)
    ts = np.asarray(ts, np.int64)
    values = np.asarray(values, np.float64)
    hour = ts // HOUR_MS
    starts = np.flatnonzero(np.r_[True, (sid[1:] != sid[:-1]) | (hour[1:] != hour[:-1])])
    ends = np.r_[starts[1:], sid.shape[0]]
    owner = _timeline_owners(ts, starts, ends)
    ids = first_id + np.arange(starts.shape[0], dtype=np.int64)
    blobs = [[b[i:i + PIECE_BYTES] for i in range(0, len(b), PIECE_BYTES)]
             for b in chunkcodec.encode_many(ts, values, starts, shared=owner >= 0)]
    # Columns of a chunk table's rows (CHUNK_DDL); `ts_from` -1 (no shared timeline) is
    # inserted as NULL (chunk ids are >= 0; no masked array: DuckDB 1.5 without pandas would
    # read its masked entries as values).
    return {"series_id": sid[starts].astype(np.int32), "chunk_id": ids,
            "ts_from": np.where(owner >= 0, first_id + owner, -1),
            "t_min": ts[starts], "t_max": ts[ends - 1],
            "n": (ends - starts).astype(np.int32), "data": columns.objects(blobs)}


def _timeline_owners(ts: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per run, the index of the first earlier run with the very same timestamps (-1: none).

    Candidates are found by a vectorised fingerprint (length, first, last, two weighted sums)
    and each match is then checked element by element, so a fingerprint collision only costs
    a missed sharing, never a wrong timestamp."""
    runs = starts.shape[0]
    owner = np.full(runs, -1, np.int64)
    if runs < 2:
        return owner
    lengths = ends - starts
    rel = ts - np.repeat(ts[starts], lengths)
    pos = np.arange(ts.shape[0]) - np.repeat(starts, lengths)
    s1 = np.add.reduceat(rel, starts)
    s2 = np.add.reduceat(rel * (pos + 1), starts)  # wraps on overflow: still a fingerprint
    keys = np.stack([lengths, ts[starts], ts[ends - 1], s1, s2], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    cand = first[inverse.ravel()]
    for i in np.flatnonzero(cand != np.arange(runs)).tolist():
        j = int(cand[i])
        if np.array_equal(ts[starts[i]:ends[i]], ts[starts[j]:ends[j]]):
            owner[i] = j
    return owner


def read_chunks(con: duckdb.DuckDBPyConnection, ids: list[int] | None, lo: int | None,
                hi: int | None) -> columns.Columns:
    """Decoded points of the chunks of series `ids` (None: all) within [lo, hi), as a table
    (series_id int32, ts int64, value float64) sorted by series then time."""
    tables = [t for t in chunk_tables(con) if (lo is None or t.hi_ms > lo)
              and (hi is None or t.lo_ms < hi)]
    if not tables or (ids is not None and not ids):
        return _points_table([], [], [])
    conds = ["TRUE"]
    if lo is not None:
        conds.append(f"t_max >= {int(lo)}")
    if hi is not None:
        conds.append(f"t_min < {int(hi)}")
    if ids is not None:
        _chunk_ids = {"sid": np.asarray(ids, np.int32)}  # noqa: F841
        conds.append("series_id IN (SELECT sid FROM _chunk_ids)")
    where = " AND ".join(conds)
    cols = "series_id, chunk_id, ts_from, t_min, n, data"
    rows = con.execute(" UNION ALL ".join(f"SELECT {cols} FROM {t.name} WHERE {where}"
                                          for t in tables)).fetchall()
    timelines = _timelines(con, tables, rows)
    sids, tss, vals = [], [], []
    for s, _, ts_from, t_min, n, pieces in rows:
        t, v = chunkcodec.decode(b"".join(pieces), int(t_min), int(n), timelines.get(ts_from))
        keep = np.ones(t.shape[0], bool)
        if lo is not None:
            keep &= t >= lo
        if hi is not None:
            keep &= t < hi
        if keep.any():
            sids.append(np.full(int(keep.sum()), s, np.int32))
            tss.append(t[keep])
            vals.append(v[keep])
    return _points_table(sids, tss, vals)


def _timelines(con: duckdb.DuckDBPyConnection, tables: list[ChunkTable],
               rows: list[tuple[Any, ...]]) -> dict[int, np.ndarray]:
    """Timestamps of the chunks that the given rows share theirs with, by chunk_id."""
    need = {int(r[2]) for r in rows if r[2] is not None}
    if not need:
        return {}
    have = {int(r[1]): r for r in rows if int(r[1]) in need}
    missing = need - have.keys()
    if missing:
        in_list = ", ".join(str(i) for i in sorted(missing))
        for r in con.execute(" UNION ALL ".join(
                f"SELECT series_id, chunk_id, ts_from, t_min, n, data FROM {t.name} "
                f"WHERE chunk_id IN ({in_list})" for t in tables)).fetchall():
            have[int(r[1])] = r
    out = {}
    for cid in need:
        if cid not in have:
            raise StoreError(f"chunk {cid}, whose timestamps other chunks share, is missing")
        r = have[cid]
        out[cid] = chunkcodec.decode(b"".join(r[5]), int(r[3]), int(r[4]))[0]
    return out


def _points_table(sids: list[np.ndarray], tss: list[np.ndarray],
                  vals: list[np.ndarray]) -> columns.Columns:
    if not sids:
        return columns.points([], [], [])
    sid, ts, val = np.concatenate(sids), np.concatenate(tss), np.concatenate(vals)
    order = np.lexsort((ts, sid))  # overlapping chunks of one series (stragglers) interleave
    return columns.points(sid[order], ts[order], val[order])


def newest_per_series(con: duckdb.DuckDBPyConnection) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """(series_id, ts, value) of the newest packed point of every series, sorted by series."""
    tables = chunk_tables(con)
    if not tables:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    # Choose the chunks on their small columns first, then read only those blobs.
    newest = [int(r[0]) for r in con.execute(f"""
        SELECT chunk_id FROM ({" UNION ALL ".join(
            f"SELECT series_id, chunk_id, t_max FROM {t.name}" for t in tables)})
        QUALIFY row_number() OVER (PARTITION BY series_id ORDER BY t_max DESC) = 1""").fetchall()]
    in_list = ", ".join(map(str, newest))
    rows = con.execute(" UNION ALL ".join(
        f"SELECT series_id, chunk_id, ts_from, t_min, n, data FROM {t.name} "
        f"WHERE chunk_id IN ({in_list})" for t in tables) + " ORDER BY series_id").fetchall()
    timelines = _timelines(con, tables, rows)
    sid = np.empty(len(rows), np.int64)
    ts = np.empty(len(rows), np.int64)
    val = np.empty(len(rows))
    for i, (s, _, ts_from, t_min, n, pieces) in enumerate(rows):
        t, v = chunkcodec.decode(b"".join(pieces), int(t_min), int(n), timelines.get(ts_from))
        j = int(np.argmax(t))
        sid[i], ts[i], val[i] = s, t[j], v[j]
    return sid, ts, val
