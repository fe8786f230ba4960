"""Rollup tiers (1m, 1h, 1d): min, max, sum, count, last per series and bucket.

Maintained incrementally: each write records the minutes it touched in `dirty_minutes` (same
transaction as the points). A pass recomputes those minutes (once they have settled) from raw
into 1m and appends them to 1h and 1d as partial rows; a minute rolled a second time (late data)
has its hours and days recomputed from the tier below instead. One transaction per run of
minutes, which also clears them from `dirty_minutes`. So late and resent batches are handled by
construction (resends never reach the points; late points make their minute dirty), a crash
between write and pass only delays the pass, and history is never rescanned. Points older than the
raw horizon (raw already deleted by retention) are merged into each tier as partial rows. Readers
always combine rows per (series, bucket); `compact_1m` folds settled hours to one row each.
"""

from __future__ import annotations

import time

import duckdb
import pyarrow as pa

from legion.aggregator.store.schema import TIERS

MINUTE_MS = 60_000

_PARTIAL = ("min({v}) AS min, max({v}) AS max, sum({v}) AS sum, count(*) AS count, "
            "max({t}) AS last_ts, arg_max({v}, {t}) AS last")
_COMBINE = ("min(min) AS min, max(max) AS max, sum(sum) AS sum, sum(count) AS count, "
            "max(last_ts) AS last_ts, arg_max(last, last_ts) AS last")


def kept_since(con: duckdb.DuckDBPyConnection, tier: str) -> int:
    """The retention horizon of a tier ('raw', '1m', ...): data before it was deleted (ms)."""
    row = con.execute("SELECT max(kept_since_ms) FROM tier_state WHERE tier = ?",
                      [tier]).fetchall()
    return int(row[0][0] or 0) if row else 0


def set_kept_since(con: duckdb.DuckDBPyConnection, tier: str, ms: int) -> None:
    """Record a tier's retention horizon (inside the caller's transaction)."""
    con.execute("DELETE FROM tier_state WHERE tier = ?", [tier])
    con.execute("INSERT INTO tier_state VALUES (?, ?)", [tier, int(ms)])


def merge_partials(con: duckdb.DuckDBPyConnection, points: pa.Table) -> None:
    """Add late points (older than the raw horizon) to every tier as partial rows."""
    con.register("_late_points", points)
    try:
        for tier, width in TIERS.items():
            con.execute(f"""
                INSERT INTO rollup_{tier}
                SELECT series_id, ts // {width} * {width} AS bucket,
                       {_PARTIAL.format(v='value', t='ts')}
                FROM _late_points
                WHERE ts >= coalesce((SELECT max(kept_since_ms) FROM tier_state
                                      WHERE tier = '{tier}'), 0)
                GROUP BY ALL""")
    finally:
        con.unregister("_late_points")


def pending_minutes(con: duckdb.DuckDBPyConnection) -> int:
    """How many distinct minutes wait for a rollup pass."""
    return int(con.execute("SELECT count(DISTINCT minute) FROM dirty_minutes").fetchall()[0][0])


SETTLE_MINUTES = 2
"""A minute is rolled up once data two minutes newer has arrived (or the clock is past it): the
open minute, written by every commit, is read from raw by queries instead of being recomputed
on every pass."""


def run_pass(con: duckdb.DuckDBPyConnection, dirty: set[int], budget_s: float = 0.1,
             max_minutes: int = 120, include_open: bool = False, now_ms: int = 0) -> int:
    """Recompute settled dirty minutes (and their hours and days), oldest first; returns count.

    `dirty` mirrors the `dirty_minutes` table (the writer keeps it); processed minutes are
    removed from it after their transaction commits. A minute is settled once data two minutes
    newer arrived, or once the clock (`now_ms`) is two minutes past it.
    """
    done = 0
    deadline = time.monotonic() + budget_s
    settle = 0 if include_open else SETTLE_MINUTES
    while dirty:
        limit = max(max(dirty) - settle, now_ms // MINUTE_MS - settle - 1)
        minutes = sorted(m for m in dirty if include_open or m <= limit)[:max_minutes]
        if not minutes:
            return done
        # One run of nearby minutes per transaction keeps each raw scan in a narrow ts range.
        run = [minutes[0]]
        for m in minutes[1:]:
            if m - run[-1] > 24 * 60:
                break
            run.append(m)
        _recompute(con, run)
        dirty.difference_update(run)
        done += len(run)
        if time.monotonic() >= deadline:
            return done
    return done


def _recompute(con: duckdb.DuckDBPyConnection, minutes: list[int]) -> None:
    lo, hi = minutes[0] * MINUTE_MS, (minutes[-1] + 1) * MINUTE_MS
    dirty = "(" + ", ".join(str(int(m)) for m in minutes) + ")"  # ints only: safe inline
    con.execute("BEGIN TRANSACTION")
    try:
        rolled_before = con.execute(
            f"SELECT count(*) FROM rollup_1m WHERE bucket >= {lo} AND bucket < {hi} AND "
            f"bucket // 60000 IN {dirty}").fetchall()[0][0]
        if rolled_before:
            con.execute(f"DELETE FROM rollup_1m WHERE bucket >= {lo} AND bucket < {hi} AND "
                        f"bucket // 60000 IN {dirty}")
        con.execute(f"""
            INSERT INTO rollup_1m
            SELECT series_id, ts // 60000 * 60000 AS bucket, {_PARTIAL.format(v='value', t='ts')}
            FROM points
            WHERE ts >= {lo} AND ts < {hi} AND ts // 60000 IN {dirty}
            GROUP BY ALL ORDER BY series_id, bucket""")
        prev = "1m"
        for tier in ("1h", "1d"):
            width = TIERS[tier]
            buckets = sorted({m * MINUTE_MS // width * width for m in minutes})
            blo, bhi = buckets[0], buckets[-1] + width
            in_list = "(" + ", ".join(map(str, buckets)) + ")"
            if not rolled_before:
                # The usual case: minutes rolled for the first time. Their 1m rows are appended
                # to the coarser tiers as partial rows (readers combine rows per bucket), so a
                # pass costs O(new minutes), not O(hour + day); compaction folds them later.
                con.execute(f"""
                    INSERT INTO rollup_{tier}
                    SELECT series_id, bucket // {width} * {width} AS b, {_COMBINE}
                    FROM rollup_1m WHERE bucket >= {lo} AND bucket < {hi}
                      AND bucket // 60000 IN {dirty}
                    GROUP BY series_id, b ORDER BY series_id, b""")
                continue
            # A minute rolled before (late data): recompute its hours and days from below.
            con.execute(f"DELETE FROM rollup_{tier} WHERE bucket >= {blo} AND bucket < {bhi} "
                        f"AND bucket IN {in_list}")
            con.execute(f"""
                INSERT INTO rollup_{tier}
                SELECT series_id, bucket // {width} * {width} AS b, {_COMBINE}
                FROM rollup_{prev}
                WHERE bucket >= {blo} AND bucket < {bhi}
                  AND bucket // {width} * {width} IN {in_list}
                GROUP BY series_id, b ORDER BY series_id, b""")
            prev = tier
        con.execute(f"DELETE FROM dirty_minutes WHERE minute IN {dirty}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _fold(con: duckdb.DuckDBPyConnection, tier: str, lo: int, hi: int,
          sid_lo: int, sid_hi: int) -> None:
    """Combine a tier's rows of [lo, hi) for series ids [sid_lo, sid_hi) into one row per
    (series, bucket), sorted by series."""
    where = (f"bucket >= {lo} AND bucket < {hi} AND series_id >= {sid_lo} "
             f"AND series_id < {sid_hi}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _fold AS
        SELECT series_id, bucket, {_COMBINE} FROM rollup_{tier} WHERE {where}
        GROUP BY series_id, bucket ORDER BY series_id, bucket""")
    con.execute(f"DELETE FROM rollup_{tier} WHERE {where}")
    con.execute(f"INSERT INTO rollup_{tier} SELECT * FROM _fold")
    con.execute("DROP TABLE _fold")


COMPACT_MIN_SERIES = 256
"""Fewest series one compaction step folds (when the budget allows no more)."""


def compact_1m(con: duckdb.DuckDBPyConnection, dirty: set[int], budget_s: float,
               deadline: float | None = None, cost: dict[str, float] | None = None,
               may_overrun: bool = True) -> int:
    """Fold and sort settled hours of the tiers; returns hours compacted.

    Passes append a few minutes of all series at a time (and partial rows to 1h and 1d), so zone
    maps cannot prune a one-series read. Rewriting each settled hour of 1m (and its 1h bucket,
    and the 1d bucket of its day so far) as runs sorted by series with one row per bucket keeps
    the tiers small and lets a one-series, 24 h read skip most row groups.

    Hours are done in time order, each in steps of a range of series ids (one transaction each,
    progress in `tier_state`: 'compact_1m' = hours done, 'compact_1m_series' = first series id
    of the current hour not yet folded), sized from the measured cost per series
    (`cost["series"]`, kept by the caller across rounds) to what is left before `deadline`. A
    step that would not fit is not started, except one smallest step per call when
    `may_overrun` (the round has done nothing else), so compaction cannot starve. Readers
    combine rows per bucket, so a half-compacted hour reads the same.
    """
    deadline = time.monotonic() + budget_s if deadline is None else deadline
    cost = {} if cost is None else cost
    hour = 3_600_000
    done = steps = 0
    mark = kept_since(con, "compact_1m")
    if mark == 0:
        row = con.execute("SELECT min(bucket) FROM rollup_1m").fetchall()[0][0]
        if row is None:
            return 0
        mark = int(row) // hour * hour
    sid = kept_since(con, "compact_1m_series")
    horizon = kept_since(con, "1m") // hour * hour
    if horizon > mark:  # retention passed the hour in progress: start afresh at its horizon
        mark, sid = horizon, 0
    newest = con.execute("SELECT max(bucket) FROM rollup_1m WHERE bucket >= ?",
                         [mark]).fetchall()[0][0]
    if newest is None:
        return 0
    top = int(con.execute("SELECT coalesce(max(id), 0) FROM series").fetchall()[0][0]) + 1
    while mark + hour <= int(newest):
        lo, hi = mark, mark + hour
        if any(lo <= m * MINUTE_MS < hi for m in dirty):
            break  # wait for the pass; hours are compacted strictly in order
        left = deadline - time.monotonic()
        per = cost.get("series")
        if per is None:
            n = COMPACT_MIN_SERIES
        elif max(per * COMPACT_MIN_SERIES, cost.get("floor", 0.0)) <= left:
            n = max(COMPACT_MIN_SERIES, int(0.6 * left / per) if per > 0 else top)
        elif may_overrun and steps == 0:
            n = COMPACT_MIN_SERIES
        else:
            break
        if left <= 0 and not (may_overrun and steps == 0):
            break
        end = min(top, sid + n)
        t0 = time.monotonic()
        con.execute("BEGIN TRANSACTION")
        try:
            _fold(con, "1m", lo, hi, sid, end)
            _fold(con, "1h", lo, hi, sid, end)
            day = lo // TIERS["1d"] * TIERS["1d"]
            _fold(con, "1d", day, day + TIERS["1d"], sid, end)  # the day so far
            if end >= top:
                set_kept_since(con, "compact_1m", hi)
                set_kept_since(con, "compact_1m_series", 0)
            else:
                set_kept_since(con, "compact_1m_series", end)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        took = time.monotonic() - t0
        new = took / max(end - sid, 1)
        per = cost.get("series")
        cost["series"] = new if per is None or new > per else 0.7 * per + 0.3 * new
        floor = cost.get("floor", 0.0)
        cost["floor"] = took if took > floor else 0.8 * floor + 0.2 * took
        steps += 1
        if end >= top:
            mark, sid = hi, 0
            done += 1
        else:
            sid = end
    return done
