"""Retention per tier and the total disk cap, in small time-bounded steps.

Each step deletes one chunk of the oldest data of one tier in its own transaction and moves that
tier's horizon (`tier_state.kept_since_ms`) forward, so ingest (same thread) waits at most one
chunk. Raw data is never deleted past a minute that still waits for its rollup pass, nor (with
archiving on) past what the archive has written. Old `batches` rows are folded (`batch_fold.py`)
in steps paced the same way. Over the disk cap, the oldest raw goes first,
then the oldest 1m, then 1h; the 1d tier is never deleted by the cap.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import duckdb

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import batch_fold, rollup
from legion.aggregator.store.chunk_tables import chunk_tables, drop_hours_before
from legion.aggregator.store.export import archive_chunk
from legion.aggregator.store.schema import TIERS
from legion.kernel.errors import StoreError

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
CHUNK_MS = {"raw": 15 * 60_000, "1m": DAY_MS, "1h": 30 * DAY_MS, "1d": 365 * DAY_MS,
            batch_fold.TIER: HOUR_MS}
"""The most time one deletion step covers per tier (about the same row count each)."""
MIN_CHUNK_MS = {"raw": 60_000, "1m": HOUR_MS, "1h": DAY_MS, "1d": DAY_MS,
                batch_fold.TIER: 60_000}
"""The least: steps shrink towards this when the measured cost says a bigger one would not fit."""
HORIZON_STEP_MS = {"raw": 15 * 60_000, "1m": HOUR_MS}
"""Raw and 1m expire in whole steps of this much (other tiers: their bucket width), so data
lives up to one step past its retention: the horizon then moves four times an hour (raw) and
once an hour (1m) instead of every minute, and the maintenance rounds in between open no
transaction for it (issue 17: at one agent that was most of retention's cost)."""
FILL = 0.6
"""A step is sized to take this share of the time left in the round (estimates are noisy)."""
RESERVE = 0.1
"""Share of the budget kept free after the last step for the round's bookkeeping."""


def disk_bytes(path: Path) -> int:
    """Bytes on disk of the database file plus its WAL."""
    total = 0
    for p in (path, Path(str(path) + ".wal")):
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total


def used_bytes(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Bytes in use: used blocks (free blocks are reused, the file never shrinks) plus WAL."""
    row = con.execute("SELECT block_size, used_blocks FROM pragma_database_size() "
                      "WHERE database_name = current_database()").fetchall()
    wal = Path(str(path) + ".wal")
    return int(row[0][0]) * int(row[0][1]) + (os.path.getsize(wal) if wal.exists() else 0)


def cutoffs(config: StorageConfig, now_ms: int) -> dict[str, int]:
    """Per tier, the time before which data has expired (0 = keep forever), in whole
    `HORIZON_STEP_MS` steps."""
    ret = {"raw": config.raw_retention_hours * HOUR_MS,
           "1m": config.rollup_1m_retention_days * DAY_MS,
           "1h": config.rollup_1h_retention_days * DAY_MS,
           "1d": config.rollup_1d_retention_days * DAY_MS}
    out = {}
    for tier, keep in ret.items():
        step = HORIZON_STEP_MS.get(tier) or TIERS[tier]
        out[tier] = 0 if keep <= 0 else max(0, int(now_ms - keep) // step * step)
    return out


class Pacer:
    """Sizes each step to the time left in the round from the measured cost of earlier steps
    (seconds per ms of data covered, per tier), so a round ends within its budget instead of
    overshooting by a whole fixed-size chunk. Kept by the Store across rounds."""

    def __init__(self) -> None:
        self.cost: dict[str, float] = {}  # tier -> seconds per ms of data in one step
        self.fixed: dict[str, float] = {}  # tier -> recent slowest step (a transaction's floor)

    def span(self, tier: str, left_s: float) -> int | None:
        """Data span (ms) of the next step, or None when even the smallest would not fit."""
        width = TIERS.get(tier, 60_000)
        lo, hi = MIN_CHUNK_MS[tier], CHUNK_MS[tier]
        cost = self.cost.get(tier)
        if cost is None:  # unmeasured: start small, grow from measurements
            return lo
        if max(cost * lo, self.fixed.get(tier, 0.0)) > left_s:
            return None
        want = int(FILL * left_s / cost) if cost > 0 else hi
        return max(lo, min(hi, want // width * width))

    def record(self, tier: str, span_ms: int, elapsed_s: float) -> None:
        new = elapsed_s / max(span_ms, 1)
        old = self.cost.get(tier)
        # Rise at once, decay slowly: an underestimate is what breaks the budget.
        self.cost[tier] = new if old is None or new > old else 0.7 * old + 0.3 * new
        f = self.fixed.get(tier, 0.0)
        self.fixed[tier] = elapsed_s if elapsed_s > f else 0.8 * f + 0.2 * elapsed_s


def run(con: duckdb.DuckDBPyConnection, config: StorageConfig, path: Path, now_ms: int,
        budget_s: float, archive_dir: Path | None = None,
        archive_key: str | None = None, pacer: Pacer | None = None,
        deadline: float | None = None, may_overrun: bool = True) -> dict[str, Any]:
    """Delete expired data (and over-cap data) in chunks until done or the budget is spent.

    Each step is sized by `pacer` to fit the time left (`deadline`, monotonic; default now +
    budget_s); when even the smallest step would not fit, the round stops there, except that
    with `may_overrun` (the round has done nothing else) it makes one smallest step, so
    retention cannot starve.
    """
    deadline = time.monotonic() + budget_s if deadline is None else deadline
    # Keep a tenth of the budget for what follows the last step (bookkeeping, the caller).
    deadline -= RESERVE * budget_s
    pacer = pacer or Pacer()
    report: dict[str, Any] = {"deleted": {}, "archived_points": 0, "over_cap": False,
                              "steps": 0}
    cut = cutoffs(config, now_ms)
    steps = 0

    def step(tier: str, limit: int | None) -> int | None:
        nonlocal steps
        left = deadline - time.monotonic()
        span = pacer.span(tier, left) if left > 0 else None
        if span is None:
            if steps or not may_overrun:
                return None
            span = MIN_CHUNK_MS[tier]  # guaranteed progress: one smallest step per round
        t = time.monotonic()
        n = _step(con, tier, limit, archive_dir, archive_key, report, span)
        if n is not None:
            steps += 1
            report["steps"] = steps
            pacer.record(tier, span, time.monotonic() - t)
        return n

    try:
        for tier in ("raw", "1m", "1h", "1d"):
            while cut[tier]:
                if step(tier, cut[tier]) is None:
                    break
        folded = fold_batches(con, now_ms, pacer, deadline, batch_fold.CATCH_UP_MS)
        if folded:
            report["deleted"][batch_fold.TIER] = folded
        cap = config.max_disk_bytes
        while cap and time.monotonic() < deadline and used_bytes(con, path) > cap:
            report["over_cap"] = True
            for tier in ("raw", "1m", "1h"):
                if (n := step(tier, None)) is not None:
                    break
            else:
                break
            if n:  # deleted row groups only become free blocks at a checkpoint
                con.execute("CHECKPOINT")
    except duckdb.Error as exc:
        raise StoreError(f"retention step failed: {exc}") from exc
    return report


def fold_batches(con: duckdb.DuckDBPyConnection, now_ms: int, pacer: Pacer,
                 deadline: float, at_least_ms: int = 0) -> int:
    """Fold `batches` rows past their horizon in paced steps while they fit before `deadline`;
    with `at_least_ms` (the maintenance round) the first step covers that much even over the
    deadline, up to `batch_fold.CATCH_UP_ROWS` rows, so folding keeps pace however full the
    rounds are and that step stays within a round's budget at any fleet size. Light rounds call
    it with what is left of their budget. Returns rows folded."""
    cut = batch_fold.horizon_ms(now_ms)
    folded = 0
    first = True
    try:
        while (left := deadline - time.monotonic()) > 0 or (first and at_least_ms):
            span = pacer.span(batch_fold.TIER, left) if left > 0 else None
            rows = None
            if first and at_least_ms and (span or 0) < at_least_ms:  # catch-up: rows bound it
                span, rows = at_least_ms, batch_fold.CATCH_UP_ROWS
            first = False
            if span is None:
                break
            t = time.monotonic()
            n = batch_fold.step(con, cut, span, rows)
            if n is None:
                break
            if rows is None:  # the catch-up may cover less than `span`: not a measure
                pacer.record(batch_fold.TIER, span, time.monotonic() - t)
            folded += n
    except duckdb.Error as exc:
        raise StoreError(f"folding batches failed: {exc}") from exc
    return folded


def _oldest(con: duckdb.DuckDBPyConnection, tier: str, table: str, col: str,
            since: int) -> int | None:
    """Time of the oldest row of a tier at or after `since` (raw: in every form), or None."""
    found = [con.execute(f"SELECT min({col}) FROM {table} WHERE {col} >= ?",
                         [since]).fetchall()[0][0]]
    if tier == "raw":  # raw also lives in late_points and packed hour tables
        found.append(con.execute("SELECT min(ts) FROM late_points WHERE ts >= ?",
                                 [since]).fetchall()[0][0])
        found += [max(t.lo_ms, since) for t in chunk_tables(con) if t.hi_ms > since][:1]
    found = [int(f) for f in found if f is not None]
    return min(found) if found else None


def _step(con: duckdb.DuckDBPyConnection, tier: str, cut: int | None,
          archive_dir: Path | None, archive_key: str | None,
          report: dict[str, Any], span_ms: int | None = None) -> int | None:
    """Delete one chunk (`span_ms` of data) of `tier` below `cut` (None: the oldest chunk, for
    the cap)."""
    table, col = ("points", "ts") if tier == "raw" else (f"rollup_{tier}", "bucket")
    kept = rollup.kept_since(con, tier)
    width = TIERS.get(tier, 60_000)
    if kept == 0 or cut is None:
        # The first round, or the cap: start at the oldest row at or after the horizon (the
        # cap must not walk an empty stretch in small steps). One scan; a first round that
        # finds nothing expired records the horizon, so later rounds never scan again.
        oldest = _oldest(con, tier, table, col, kept)
        if oldest is None:
            return None
        start = max(kept, int(oldest) // width * width)
        if cut is not None and start >= cut:
            con.execute("BEGIN TRANSACTION")
            rollup.set_kept_since(con, tier, cut)
            con.execute("COMMIT")
            return None
    else:
        start = kept
    hi = start + (span_ms or CHUNK_MS[tier])
    if cut is not None:
        if start >= cut:
            return None
        hi = min(hi, cut)
    if tier in ("1m", "1h"):  # never delete what the next tier is still built from
        done = rollup.kept_since(con, "hours_done" if tier == "1m" else "days_done")
        hi = min(hi, done)
        if hi <= start:
            return None
    if tier == "raw":
        dirty = con.execute("SELECT min(minute) FROM dirty_minutes").fetchall()[0][0]
        if dirty is not None:
            hi = min(hi, int(dirty) * 60_000)
        if archive_dir is not None:
            done = max(rollup.kept_since(con, "archive"), start)
            if done < hi:
                report["archived_points"] += archive_chunk(con, archive_dir, done, hi,
                                                             archive_key)
                con.execute("BEGIN TRANSACTION")
                rollup.set_kept_since(con, "archive", hi)
                con.execute("COMMIT")
        if hi <= start:
            return None
    con.execute("BEGIN TRANSACTION")
    try:
        n = con.execute(f"DELETE FROM {table} WHERE {col} < ?", [hi]).fetchall()[0][0]
        if tier == "raw":  # packed raw goes by whole hours, once the hour has expired
            n += con.execute("DELETE FROM late_points WHERE ts < ?", [hi]).fetchall()[0][0]
            n += drop_hours_before(con, hi)
        rollup.set_kept_since(con, tier, hi)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    report["deleted"][tier] = report["deleted"].get(tier, 0) + int(n)
    return int(n)
