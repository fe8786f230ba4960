"""Rollup tiers (1m, 1h, 1d): min, max, sum, count, last per series and bucket.

Maintained incrementally, and without ever deleting rows scattered over the tables (a DuckDB
checkpoint rewrites every row group that lost some rows: 150-550 ms pauses, measured):

* each write records the minutes it touched in `dirty_minutes` (same transaction as the points);
  a pass recomputes those minutes (once they have settled) from raw into 1m, one transaction per
  run of minutes, which also clears them;
* a settled hour is *materialised* once into 1h from its 1m rows, and a settled day into 1d from
  its 1h rows (`materialise`; horizons 'hours_done' and 'days_done' in `tier_state`). Readers take
  hours and days not yet materialised from the finer tier, so answers are the same either way;
* a minute rolled in an hour already materialised (late data) has that hour, and its day if
  materialised, recomputed from the tier below (rows of one bucket were inserted together, so
  that delete is contiguous).

So late and resent batches are handled by construction (resends never reach the points; late
points make their minute dirty), a crash between write and pass only delays the pass, and history
is never rescanned. Points older than the raw horizon, and points of packed windows, are merged
into each tier that already covers their bucket as partial rows; readers always combine rows per
(series, bucket).
"""

from __future__ import annotations

import time

import duckdb

from legion.aggregator.store.columns import Columns
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


_MATERIALISED = {"1m": None, "1h": "hours_done", "1d": "days_done"}
"""Tier -> the tier_state row up to which it is materialised (1m: always, per minute)."""


def merge_partials(con: duckdb.DuckDBPyConnection, points: Columns) -> None:
    """Add late points (older than the raw horizon, or of packed windows) as partial rows to
    every tier that still keeps and already covers their bucket (a bucket not yet materialised
    gets them when it is, from the tier below)."""
    con.register("_late_points", points)
    try:
        for tier, width in TIERS.items():
            state = _MATERIALISED[tier]
            covered = "" if state is None else (
                f"AND ts < coalesce((SELECT max(kept_since_ms) FROM tier_state "
                f"WHERE tier = '{state}'), 0)")
            con.execute(f"""
                INSERT INTO rollup_{tier}
                SELECT series_id, ts // {width} * {width} AS bucket,
                       {_PARTIAL.format(v='value', t='ts')}
                FROM _late_points
                WHERE ts >= coalesce((SELECT max(kept_since_ms) FROM tier_state
                                      WHERE tier = '{tier}'), 0) {covered}
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
        con.execute(f"DELETE FROM rollup_1m WHERE bucket >= {lo} AND bucket < {hi} AND "
                    f"bucket // 60000 IN {dirty}")
        con.execute(f"""
            INSERT INTO rollup_1m
            SELECT series_id, ts // 60000 * 60000 AS bucket, {_PARTIAL.format(v='value', t='ts')}
            FROM points
            WHERE ts >= {lo} AND ts < {hi} AND ts // 60000 IN {dirty}
            GROUP BY ALL ORDER BY series_id, bucket""")
        # Buckets already materialised (late data): recompute them from the tier below.
        prev = "1m"
        for tier, done in (("1h", kept_since(con, "hours_done")),
                           ("1d", kept_since(con, "days_done"))):
            width = TIERS[tier]
            buckets = sorted({b for m in minutes if (b := m * MINUTE_MS // width * width) < done})
            if buckets:
                _rebuild(con, tier, prev, buckets)
            prev = tier
        con.execute(f"DELETE FROM dirty_minutes WHERE minute IN {dirty}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _rebuild(con: duckdb.DuckDBPyConnection, tier: str, below: str, buckets: list[int]) -> None:
    """Replace the rows of some buckets of `tier` by their combination from tier `below`."""
    width = TIERS[tier]
    blo, bhi = buckets[0], buckets[-1] + width
    in_list = "(" + ", ".join(str(int(b)) for b in buckets) + ")"
    con.execute(f"DELETE FROM rollup_{tier} WHERE bucket >= {blo} AND bucket < {bhi} "
                f"AND bucket IN {in_list}")
    con.execute(f"""
        INSERT INTO rollup_{tier}
        SELECT series_id, bucket // {width} * {width} AS b, {_COMBINE}
        FROM rollup_{below}
        WHERE bucket >= {blo} AND bucket < {bhi} AND bucket // {width} * {width} IN {in_list}
        GROUP BY series_id, b ORDER BY series_id, b""")


def materialise(con: duckdb.DuckDBPyConnection, dirty: set[int], settled_ms: int,
                deadline: float, may_overrun: bool = True,
                cost: dict[str, float] | None = None) -> int:
    """Materialise settled hours into 1h and settled days into 1d, oldest first, one bucket per
    transaction, until done or `deadline`; returns buckets written.

    An hour is settled once `settled_ms` (clock or newest data, minus the settle time) is past
    its end and none of its minutes waits for a pass; a day once all its hours are materialised.
    `cost` (kept by the caller) holds the measured seconds per bucket of each tier: a bucket that
    would not fit before `deadline` is not started, except one per call when `may_overrun`.
    """
    cost = {} if cost is None else cost
    limit = settled_ms // MINUTE_MS * MINUTE_MS
    if dirty:
        limit = min(limit, min(dirty) * MINUTE_MS)
    done = 0
    for tier, below, state, until in (("1h", "1m", "hours_done", limit),
                                      ("1d", "1h", "days_done", None)):
        width = TIERS[tier]
        mark = kept_since(con, state)
        if until is None:  # a day waits for all of its hours (all of them up to the limit
            # when no 1m row is left past the materialised hours)
            hours_done = kept_since(con, "hours_done")
            more = con.execute("SELECT EXISTS (SELECT 1 FROM rollup_1m WHERE bucket >= ?)",
                               [hours_done]).fetchall()[0][0]
            until = hours_done if more else max(hours_done, limit)
        while True:
            row = con.execute(f"SELECT min(bucket) FROM rollup_{below} WHERE bucket >= ?",
                              [mark]).fetchall()[0][0]
            if row is None:
                break
            b = int(row) // width * width
            if b + width > until:
                break
            if cost.get(tier, 0.0) > deadline - time.monotonic() and \
                    not (may_overrun and done == 0):
                return done
            t0 = time.monotonic()
            con.execute("BEGIN TRANSACTION")
            try:
                _rebuild(con, tier, below, [b])
                set_kept_since(con, state, b + width)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            took, old = time.monotonic() - t0, cost.get(tier)
            cost[tier] = took if old is None or took > old else 0.7 * old + 0.3 * took
            mark = b + width
            done += 1
    return done
