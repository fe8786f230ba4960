"""Settled raw points packed into compressed per-series chunks, and raw reads over both forms.

New points land in `points` (one row each, fast to insert and to roll up). Once a window of data
has settled (by default each whole hour, two minutes after it ended, once its minutes are rolled
up), `pack` moves its points into chunk tables: one row per series and window holding a
`chunkcodec` blob, about 1 byte per point instead of 5-7 (`bench/storage.py`). Chunks are
partitioned into one table per UTC hour (`chunks_<ts // 3600000>`): DuckDB frees space only when
whole row groups die (measured), and a chunk row is tiny next to a row group, so retention and the
disk cap drop whole hour tables instead of deleting rows that would never give space back.
Windows are done in time order, each in steps of a range of series ids (one transaction per step,
sized by measured cost to the maintenance budget; progress in `tier_state`: 'pack' = everything
before it is packed, 'pack_series' = first series id of the window in progress not yet packed,
'pack_until' = that window's end).

Points that arrive later for a packed (or in-progress) window are *late*: the writer stores them in
`points` without marking their minute dirty and adds them to the rollup tiers as partial rows, so a
rollup pass never recomputes a minute whose points are partly packed. The next step of `pack` picks
such stragglers up with the window it packs, each into its own hour's table (so chunks of one
series and hour may overlap; readers sort).

`RawSource` gives queries one relation over `points` and the decoded chunks of the series and time
range asked for, so every raw read (queries, p50/p95/p99, export, archive) sees both.
"""

from __future__ import annotations

import time
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from legion.aggregator.store import chunkcodec
from legion.aggregator.store.rollup import kept_since, set_kept_since

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SETTLE_MS = 2 * MINUTE_MS
"""A window is packed once the clock (or the newest data) is this far past its end."""
PACK_MIN_SERIES = 256
"""Fewest series one pack step takes when the budget allows no more."""
CHUNK_SCHEMA = pa.schema([("series_id", pa.int32()), ("t_min", pa.int64()),
                          ("t_max", pa.int64()), ("n", pa.int32()), ("data", pa.binary())])


def late_horizon(con: duckdb.DuckDBPyConnection) -> int:
    """Points older than this (ms) belong to packed or packing windows: they take the late path."""
    if kept_since(con, "pack_series"):
        return kept_since(con, "pack_until")
    return kept_since(con, "pack")


def pack(con: duckdb.DuckDBPyConnection, dirty: set[int], settled_ms: int, deadline: float,
         cost: dict[str, float], may_overrun: bool = True) -> int:
    """Pack settled windows before `settled_ms` (minute-aligned down), oldest first, in steps
    that fit before `deadline`; returns points packed.

    A window ends at the next whole hour or at `settled_ms`, whichever comes first, and never
    past a minute still waiting for its rollup pass (`dirty`). `cost` (kept by the caller across
    rounds) holds the measured seconds per series and the slowest recent step; a step that would
    not fit is not started, except one smallest step per call when `may_overrun`.
    """
    limit = settled_ms // MINUTE_MS * MINUTE_MS
    if dirty:
        limit = min(limit, min(dirty) * MINUTE_MS)
    mark = kept_since(con, "pack")
    sid = kept_since(con, "pack_series")
    until = kept_since(con, "pack_until") if sid else 0
    top = int(con.execute("SELECT coalesce(max(id), 0) FROM series").fetchall()[0][0]) + 1
    packed = steps = 0
    while True:
        if not sid:  # next window: from the oldest unpacked point to its hour's end (or limit)
            first = con.execute("SELECT min(ts) FROM points WHERE ts >= ?",
                                [mark]).fetchall()[0][0]
            if first is not None:
                mark = max(mark, int(first) // MINUTE_MS * MINUTE_MS)
                until = min((mark // HOUR_MS + 1) * HOUR_MS, limit)
            elif con.execute("SELECT EXISTS (SELECT 1 FROM points WHERE ts < ?)",
                             [mark]).fetchall()[0][0]:
                until = mark  # only late points of packed windows are left: pack them alone
            else:
                return packed
            if until < mark or (first is not None and until == mark):
                return packed
        left = deadline - time.monotonic()
        per = cost.get("series")
        if per is None:
            if left <= 0 and not (may_overrun and steps == 0):
                return packed
            n = PACK_MIN_SERIES
        elif left > 0 and max(per * PACK_MIN_SERIES, cost.get("floor", 0.0)) <= left:
            n = max(PACK_MIN_SERIES, int(0.6 * left / per) if per > 0 else top)
        elif may_overrun and steps == 0:
            n = PACK_MIN_SERIES
        else:
            return packed
        end = min(top, sid + n)
        t0 = time.monotonic()
        packed += _step(con, until, sid, end, done=end >= top, mark=mark)
        took = time.monotonic() - t0
        new = took / max(end - sid, 1)
        cost["series"] = new if per is None or new > per else 0.7 * per + 0.3 * new
        floor = cost.get("floor", 0.0)
        cost["floor"] = took if took > floor else 0.8 * floor + 0.2 * took
        steps += 1
        if end >= top:
            mark, sid = until, 0
        else:
            sid = end


CHUNK_DDL = """CREATE TABLE IF NOT EXISTS {table} (series_id INTEGER NOT NULL,
    t_min BIGINT NOT NULL, t_max BIGINT NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL)"""


def chunk_table(hour: int) -> str:
    """Name of the chunk table of an hour (ts // HOUR_MS)."""
    return f"chunks_{int(hour)}"


def chunk_hours(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Hours (ts // HOUR_MS) that have a chunk table, oldest first (in the caller's snapshot)."""
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = "
                       "current_database() AND schema_name = 'main' AND "
                       "table_name LIKE 'chunks\\_%' ESCAPE '\\'").fetchall()
    return sorted(int(r[0].removeprefix("chunks_")) for r in rows)


def drop_hours_before(con: duckdb.DuckDBPyConnection, ms: int) -> int:
    """Drop the chunk tables of hours that end at or before `ms` (inside the caller's
    transaction); returns the points they held."""
    n = 0
    for hour in chunk_hours(con):
        if (hour + 1) * HOUR_MS > ms:
            break
        n += int(con.execute(f"SELECT coalesce(sum(n), 0) FROM {chunk_table(hour)}"
                             ).fetchall()[0][0])
        con.execute(f"DROP TABLE {chunk_table(hour)}")
    return n


def _step(con: duckdb.DuckDBPyConnection, until: int, sid_lo: int, sid_hi: int, done: bool,
          mark: int) -> int:
    """Move the points before `until` of series [sid_lo, sid_hi) into chunks, in one
    transaction; returns points moved."""
    where = f"ts < {int(until)} AND series_id >= {int(sid_lo)} AND series_id < {int(sid_hi)}"
    con.execute("BEGIN TRANSACTION")
    try:
        rows = con.execute(f"SELECT series_id, ts, value FROM points WHERE {where} "
                           "ORDER BY series_id, ts").fetchnumpy()
        n = int(rows["ts"].shape[0])
        if n:
            chunks = encode_chunks(rows["series_id"], rows["ts"], rows["value"])
            hours = pc_hours(chunks)
            for hour in np.unique(hours).tolist():
                table = chunk_table(hour)
                con.execute(CHUNK_DDL.format(table=table))
                _part = chunks.filter(pa.array(hours == hour))  # noqa: F841 - read by name
                con.execute(f"INSERT INTO {table} SELECT * FROM _part")
            con.execute(f"DELETE FROM points WHERE {where}")
        if done:
            set_kept_since(con, "pack", until)
            set_kept_since(con, "pack_series", 0)
        else:
            set_kept_since(con, "pack", mark)
            set_kept_since(con, "pack_series", sid_hi)
            set_kept_since(con, "pack_until", until)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return n


def pc_hours(chunks: pa.Table) -> np.ndarray:
    """The hour (ts // HOUR_MS) of each chunk row."""
    return chunks.column("t_min").to_numpy() // HOUR_MS


def encode_chunks(sid: np.ndarray, ts: np.ndarray, values: np.ndarray) -> pa.Table:
    """One chunk row per series and UTC hour of points sorted by (series_id, ts)."""
    sid = np.asarray(sid, np.int64)
    ts = np.asarray(ts, np.int64)
    values = np.asarray(values, np.float64)
    hour = ts // HOUR_MS
    starts = np.flatnonzero(np.r_[True, (sid[1:] != sid[:-1]) | (hour[1:] != hour[:-1])])
    ends = np.r_[starts[1:], sid.shape[0]]
    blobs = [chunkcodec.encode(ts[a:b], values[a:b]) for a, b in zip(starts, ends, strict=True)]
    return pa.table([pa.array(sid[starts], pa.int32()), pa.array(ts[starts], pa.int64()),
                     pa.array(ts[ends - 1], pa.int64()), pa.array(ends - starts, pa.int32()),
                     pa.array(blobs, pa.binary())], schema=CHUNK_SCHEMA)


def read_chunks(con: duckdb.DuckDBPyConnection, ids: list[int] | None, lo: int | None,
                hi: int | None) -> pa.Table:
    """Decoded points of the chunks of series `ids` (None: all) within [lo, hi), as a table
    (series_id int32, ts int64, value float64) sorted by series then time."""
    hours = [h for h in chunk_hours(con) if (lo is None or (h + 1) * HOUR_MS > lo)
             and (hi is None or h * HOUR_MS < hi)]
    if not hours or (ids is not None and not ids):
        return _points_table([], [], [])
    conds = ["TRUE"]
    if lo is not None:
        conds.append(f"t_max >= {int(lo)}")
    if hi is not None:
        conds.append(f"t_min < {int(hi)}")
    if ids is not None:
        _chunk_ids = pa.table({"sid": pa.array(ids, pa.int32())})  # noqa: F841
        conds.append("series_id IN (SELECT sid FROM _chunk_ids)")
    where = " AND ".join(conds)
    sql = " UNION ALL ".join(f"SELECT series_id, t_min, n, data FROM {chunk_table(h)} "
                             f"WHERE {where}" for h in hours)
    rows = con.execute(sql).fetchall()
    sids, tss, vals = [], [], []
    for s, t_min, n, blob in rows:
        t, v = chunkcodec.decode(blob, int(t_min), int(n))
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


def _points_table(sids: list[np.ndarray], tss: list[np.ndarray],
                  vals: list[np.ndarray]) -> pa.Table:
    if not sids:
        return pa.table({"series_id": pa.array([], pa.int32()), "ts": pa.array([], pa.int64()),
                         "value": pa.array([], pa.float64())})
    sid, ts, val = np.concatenate(sids), np.concatenate(tss), np.concatenate(vals)
    order = np.lexsort((ts, sid))  # overlapping chunks of one series (stragglers) interleave
    return pa.table({"series_id": pa.array(sid[order], pa.int32()),
                     "ts": pa.array(ts[order], pa.int64()),
                     "value": pa.array(val[order], pa.float64())})


class RawSource:
    """One relation over the raw points of some series and range: `points` plus the decoded
    chunks, registered on the cursor for the duration of a `with` block::

        with RawSource(cur, ids, lo, hi) as rel:
            cur.execute(f"SELECT ... FROM {rel} p WHERE ...")
    """

    COLD = "_raw_cold"

    def __init__(self, cur: duckdb.DuckDBPyConnection, ids: list[int] | None,
                 lo: int | None, hi: int | None) -> None:
        self.cur, self.ids, self.lo, self.hi = cur, ids, lo, hi
        self.registered = False

    def __enter__(self) -> str:
        cold = read_chunks(self.cur, self.ids, self.lo, self.hi)
        if not cold.num_rows:
            return "points"
        self.cur.register(self.COLD, cold)
        self.registered = True
        return (f"(SELECT series_id, ts, value FROM points UNION ALL "
                f"SELECT series_id, ts, value FROM {self.COLD})")

    def __exit__(self, *exc: Any) -> None:
        if self.registered:
            self.cur.unregister(self.COLD)
            self.registered = False


def newest_per_series(con: duckdb.DuckDBPyConnection) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """(series_id, ts, value) of the newest packed point of every series, sorted by series."""
    hours = chunk_hours(con)
    rows = [] if not hours else con.execute(f"""
        SELECT series_id, t_min, n, data FROM ({" UNION ALL ".join(
            f"SELECT * FROM {chunk_table(h)}" for h in hours)})
        QUALIFY row_number() OVER (PARTITION BY series_id ORDER BY t_max DESC) = 1
        ORDER BY series_id""").fetchall()
    sid = np.empty(len(rows), np.int64)
    ts = np.empty(len(rows), np.int64)
    val = np.empty(len(rows))
    for i, (s, t_min, n, blob) in enumerate(rows):
        t, v = chunkcodec.decode(blob, int(t_min), int(n))
        j = int(np.argmax(t))
        sid[i], ts[i], val[i] = s, t[j], v[j]
    return sid, ts, val


def packed_stats(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Chunk tables (hours), chunks, the points they hold and their encoded bytes."""
    hours = chunk_hours(con)
    out = {"chunk_hours": len(hours), "chunks": 0, "packed_points": 0, "chunk_bytes": 0}
    if hours:
        row = con.execute(
            "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(octet_length(data)), 0) FROM ("
            + " UNION ALL ".join(f"SELECT n, data FROM {chunk_table(h)}" for h in hours)
            + ")").fetchall()[0]
        out.update(chunks=int(row[0]), packed_points=int(row[1]), chunk_bytes=int(row[2]))
    return out
