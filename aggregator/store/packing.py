"""Settled raw points packed into compressed per-series chunks, and raw reads over both forms.

New points land in `points` (one row each, fast to insert and to roll up). Once a window of data
has settled (each WINDOW_MS of a UTC hour, two minutes after it ended, once its minutes are rolled
up), `pack` moves its points into chunk tables: one row per series and window holding a
`chunkcodec` blob, about 1 byte per point instead of 5-9 (`bench/storage.py`); the rows are
encoded and decoded by chunk_rows.py and kept in one table per UTC hour (chunk_tables.py).
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

from legion.aggregator.store import columns
from legion.aggregator.store.chunk_rows import encode_chunks, read_chunks
from legion.aggregator.store.chunk_tables import chunk_tables, insert_chunks
from legion.aggregator.store.rollup import kept_since, set_kept_since

MINUTE_MS = 60_000
SETTLE_MS = 2 * MINUTE_MS
"""A window is packed once the clock (or the newest data) is this far past its end."""
WINDOW_MS = 15 * MINUTE_MS
"""Live packing packs windows of this length (dividing an hour). The raw rows of the window being
filled are the file's high-water mark: they take ~9 B/point in `points` and leave that much free
space once packed (reused by the next window's rows), so a shorter window keeps the file closer to
the data it holds, while its chunks compress a little worse (fleet data: 0.95 B/point for hour
windows, 1.02 for 15 min, 1.06 for 10 min, 1.21 for 5 min; docs/peers.md "File on disk")."""
PACK_MIN_SERIES = 16
"""Fewest series one pack step takes when the budget allows no more (an hour of 16 series at
1 s: about 50 ms here, of which ~25 ms is the scan of the hot table)."""
ALL_SERIES = 2 ** 31 - 1
"""'pack_series' during a window's deletion phase: every series of the window is packed."""


def late_horizon(con: duckdb.DuckDBPyConnection) -> int:
    """Points older than this (ms) belong to packed or packing windows: they take the late path."""
    if kept_since(con, "pack_series"):
        return kept_since(con, "pack_until")
    return kept_since(con, "pack")


def pack_state(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(until, first series id not yet packed) of the window in progress; (0, 0) when none.
    Rows of `points` with ts < until and a smaller series id are already in chunks."""
    return _pack_state(_pack_tiers(con))


def _pack_tiers(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """'pack', 'pack_series' and 'pack_until' of `tier_state` in one statement (0 when unset)."""
    rows = con.execute("SELECT tier, max(kept_since_ms) FROM tier_state WHERE tier IN "
                       "('pack', 'pack_series', 'pack_until') GROUP BY tier").fetchall()
    return {"pack": 0, "pack_series": 0, "pack_until": 0,
            **{str(t): int(v or 0) for t, v in rows}}


def _pack_state(tiers: dict[str, int]) -> tuple[int, int]:
    sid = tiers["pack_series"]
    return (tiers["pack_until"], sid) if sid else (0, 0)


def pack(con: duckdb.DuckDBPyConnection, dirty: set[int], settled_ms: int, deadline: float,
         cost: dict[str, float], may_overrun: bool = True, whole_windows: bool = True) -> int:
    """Pack settled windows before `settled_ms`, oldest first, in steps that fit before
    `deadline`; returns points packed.

    A window is a whole WINDOW_MS of a UTC hour, never past a minute still waiting for its
    rollup pass (`dirty`); with `whole_windows` False (an explicit `pack_raw(until_ms=...)`) the
    last window may end at `settled_ms` (minute-aligned) inside a window. It is packed in two
    phases: encoding steps over ranges of series ids (each reads its series' rows of the window
    and the late rows, writes chunks, deletes those late rows), then deletion steps over slices
    of time
    (`DELETE FROM points WHERE ts < slice end`: whole row groups, which a checkpoint frees without
    rewriting anything; deleting a few series from every row group instead made each checkpoint
    rewrite them, 150-550 ms, measured). Readers skip the rows already packed meanwhile.

    `cost` (kept by the caller across rounds) holds measured costs; a step that would not fit is
    not started, except one smallest step per call when `may_overrun`.
    """
    limit = settled_ms // MINUTE_MS * MINUTE_MS
    if dirty:
        limit = min(limit, min(dirty) * MINUTE_MS)
    if whole_windows:  # chunks of minutes would compress far worse than longer ones
        limit = limit // WINDOW_MS * WINDOW_MS
    mark = kept_since(con, "pack")
    sid = kept_since(con, "pack_series")
    until = kept_since(con, "pack_until") if sid else 0
    if not sid and limit <= mark and not con.execute(
            "SELECT EXISTS (SELECT 1 FROM late_points)").fetchall()[0][0]:
        return 0  # the usual light round: the next hour has not settled, nothing is late
    top = int(con.execute("SELECT coalesce(max(id), 0) FROM series").fetchall()[0][0]) + 1
    packed = steps = 0

    def units(kind: str, smallest: float) -> float | None:
        """How many units (series, or ms of data) the next step may take, or None: stop."""
        left = deadline - time.monotonic()
        per, floor = cost.get(kind), cost.get(kind + "_floor", 0.0)
        if per is not None and left > 0 and max(per * smallest, floor) <= left:
            return max(smallest, 0.6 * left / per) if per > 0 else float("inf")
        if (per is None and left > 0) or (may_overrun and steps == 0):
            return smallest
        return None

    def measured(kind: str, amount: float, took: float) -> None:
        new, per = took / max(amount, 1), cost.get(kind)
        cost[kind] = new if per is None or new > per else 0.7 * per + 0.3 * new
        floor = cost.get(kind + "_floor", 0.0)
        cost[kind + "_floor"] = took if took > floor else 0.8 * floor + 0.2 * took

    while True:
        if not sid:  # next window: from the oldest unpacked row to its window's end (or limit)
            first = con.execute("SELECT min(ts) FROM points WHERE ts >= ?",
                                [mark]).fetchall()[0][0]
            until = 0
            if first is not None:
                mark = max(mark, int(first) // MINUTE_MS * MINUTE_MS)
                until = min((mark // WINDOW_MS + 1) * WINDOW_MS, limit)
            if until <= mark:
                if not con.execute("SELECT EXISTS (SELECT 1 FROM late_points)").fetchall()[0][0]:
                    return packed
                until = mark  # only late rows of packed windows are waiting: pack them alone
        if sid != ALL_SERIES:
            n = units("series", PACK_MIN_SERIES)
            if n is None:
                return packed
            end = min(top, sid + int(min(n, top)))
            t0 = time.monotonic()
            packed += _encode_step(con, mark, until, sid, end, last=end >= top)
            measured("series", end - sid, time.monotonic() - t0)
            sid = ALL_SERIES if end >= top else end
        else:
            span = units("delete_ms", MINUTE_MS)
            if span is None:
                return packed
            lo = max(mark, kept_since(con, "pack_deleted"))
            hi = min(until, lo + int(min(span, until - lo + MINUTE_MS)) // MINUTE_MS * MINUTE_MS)
            t0 = time.monotonic()
            _delete_step(con, hi, done=hi >= until)
            measured("delete_ms", hi - lo, time.monotonic() - t0)
            if hi >= until:
                mark, sid = until, 0
        steps += 1


def _encode_step(con: duckdb.DuckDBPyConnection, mark: int, until: int, sid_lo: int,
                 sid_hi: int, last: bool) -> int:
    """Chunks for series [sid_lo, sid_hi): their rows of the window [mark, until) and their
    late rows before `until`, in one transaction that also drops those late rows; returns
    points encoded."""
    series = f"series_id >= {int(sid_lo)} AND series_id < {int(sid_hi)}"
    con.execute("BEGIN TRANSACTION")
    try:
        rows = con.execute(f"""
            SELECT series_id, ts, value FROM points
            WHERE ts >= {int(mark)} AND ts < {int(until)} AND {series}
            UNION ALL
            SELECT series_id, ts, value FROM late_points WHERE ts < {int(until)} AND {series}
            ORDER BY series_id, ts""").fetchnumpy()
        n = int(rows["ts"].shape[0])
        if n:
            seq = kept_since(con, "chunk_seq")
            chunks = encode_chunks(rows["series_id"], rows["ts"], rows["value"], first_id=seq)
            set_kept_since(con, "chunk_seq", seq + columns.num_rows(chunks))
            insert_chunks(con, chunks)
            con.execute(f"DELETE FROM late_points WHERE ts < {int(until)} AND {series}")
        set_kept_since(con, "pack", mark)
        set_kept_since(con, "pack_until", until)
        set_kept_since(con, "pack_series", ALL_SERIES if last else sid_hi)
        set_kept_since(con, "pack_deleted", mark)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return n


def _delete_step(con: duckdb.DuckDBPyConnection, hi: int, done: bool) -> None:
    """Delete the packed rows of `points` before `hi`; the last step closes the window."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM points WHERE ts < {int(hi)}")
        if done:
            set_kept_since(con, "pack", hi)
            set_kept_since(con, "pack_series", 0)
            set_kept_since(con, "pack_until", 0)
        set_kept_since(con, "pack_deleted", hi)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


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
        tiers = _pack_tiers(self.cur)
        until, sid = _pack_state(tiers)
        hot = "points" if not sid else (
            f"(SELECT * FROM points WHERE NOT (ts < {int(until)} AND series_id < {int(sid)}))")
        parts = [f"SELECT series_id, ts, value FROM {hot}",
                 "SELECT series_id, ts, value FROM late_points"]
        # Chunks hold only points before the packing horizon: a range after it (the live reads
        # of the last minutes) skips listing and reading them.
        packed_before = max(tiers["pack"], tiers["pack_until"])
        if self.lo is not None and self.lo >= packed_before:
            return "(" + " UNION ALL ".join(parts) + ")"
        cold = read_chunks(self.cur, self.ids, self.lo, self.hi)
        if columns.num_rows(cold):
            self.cur.register(self.COLD, cold)
            self.registered = True
            parts.append(f"SELECT series_id, ts, value FROM {self.COLD}")
        return "(" + " UNION ALL ".join(parts) + ")"

    def __exit__(self, *exc: Any) -> None:
        if self.registered:
            self.cur.unregister(self.COLD)
            self.registered = False


def count_raw(con: duckdb.DuckDBPyConnection, ids: list[int] | None = None) -> int:
    """Raw points stored, in every form (rows, late rows, chunks), each counted once."""
    until, sid = pack_state(con)
    filt = "TRUE" if ids is None else (
        "series_id IN (" + ", ".join(str(int(i)) for i in ids) + ")" if ids else "FALSE")
    hot = f"AND NOT (ts < {int(until)} AND series_id < {int(sid)})" if sid else ""
    parts = [f"SELECT count(*) AS n FROM points WHERE {filt} {hot}",
             f"SELECT count(*) AS n FROM late_points WHERE {filt}"]
    parts += [f"SELECT coalesce(sum(n), 0) AS n FROM {t.name} WHERE {filt}"
              for t in chunk_tables(con)]
    return int(con.execute(f"SELECT sum(n) FROM ({' UNION ALL '.join(parts)})"
                           ).fetchall()[0][0])


def packed_stats(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Chunk tables (hours), chunks, the points they hold and their encoded bytes."""
    tables = chunk_tables(con)
    out = {"chunk_tables": len(tables), "chunks": 0, "packed_points": 0, "chunk_bytes": 0,
           "raw_points": count_raw(con)}
    if tables:
        row = con.execute(
            "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(bytes), 0) FROM ("
            + " UNION ALL ".join(f"SELECT n, list_sum(list_transform(data, lambda x: "
                                 f"octet_length(x))) AS bytes FROM {t.name}"
                                 for t in tables)
            + ")").fetchall()[0]
        out.update(chunks=int(row[0]), packed_points=int(row[1]), chunk_bytes=int(row[2]))
    return out
