"""Retention per tier and the total disk cap, in small time-bounded steps.

Each step deletes one chunk of the oldest data of one tier in its own transaction and moves that
tier's horizon (`tier_state.kept_since_ms`) forward, so ingest (same thread) waits at most one
chunk. Raw data is never deleted past a minute that still waits for its rollup pass, nor (with
archiving on) past what the archive has written. Over the disk cap, the oldest raw goes first,
then the oldest 1m, then 1h; the 1d tier is never deleted by the cap.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import duckdb

from legion.aggregator.store import rollup
from legion.aggregator.store.export import archive_chunk
from legion.aggregator.store.schema import TIERS
from legion.config import StorageConfig
from legion.errors import StoreError

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
CHUNK_MS = {"raw": 15 * 60_000, "1m": DAY_MS, "1h": 30 * DAY_MS, "1d": 365 * DAY_MS}
"""How much time one deletion step covers per tier (about the same row count each)."""


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
    """Per tier, the time before which data has expired (0 = keep forever)."""
    ret = {"raw": config.raw_retention_hours * HOUR_MS,
           "1m": config.rollup_1m_retention_days * DAY_MS,
           "1h": config.rollup_1h_retention_days * DAY_MS,
           "1d": config.rollup_1d_retention_days * DAY_MS}
    out = {}
    for tier, keep in ret.items():
        width = TIERS.get(tier, 60_000)
        out[tier] = 0 if keep <= 0 else max(0, int(now_ms - keep) // width * width)
    return out


def run(con: duckdb.DuckDBPyConnection, config: StorageConfig, path: Path, now_ms: int,
        budget_s: float, archive_dir: Path | None = None,
        archive_key: str | None = None) -> dict[str, Any]:
    """Delete expired data (and over-cap data) in chunks until done or the budget is spent."""
    deadline = time.monotonic() + budget_s
    report: dict[str, Any] = {"deleted": {}, "archived_points": 0, "over_cap": False}
    cut = cutoffs(config, now_ms)
    try:
        for tier in ("raw", "1m", "1h", "1d"):
            while cut[tier] and time.monotonic() < deadline:
                n = _step(con, tier, cut[tier], archive_dir, archive_key, report)
                if n is None:
                    break
        cap = config.max_disk_bytes
        while cap and time.monotonic() < deadline and used_bytes(con, path) > cap:
            report["over_cap"] = True
            for tier in ("raw", "1m", "1h"):
                if _step(con, tier, None, archive_dir, archive_key, report) is not None:
                    break
            else:
                break
            con.execute("CHECKPOINT")  # deleted row groups only become free blocks here
    except duckdb.Error as exc:
        raise StoreError(f"retention step failed: {exc}") from exc
    return report


def _step(con: duckdb.DuckDBPyConnection, tier: str, cut: int | None,
          archive_dir: Path | None, archive_key: str | None,
          report: dict[str, Any]) -> int | None:
    """Delete one chunk of `tier` below `cut` (None: the oldest chunk, for the cap)."""
    table, col = ("points", "ts") if tier == "raw" else (f"rollup_{tier}", "bucket")
    kept = rollup.kept_since(con, tier)
    width = TIERS.get(tier, 60_000)
    if kept == 0:  # first round: start at the oldest row (one scan, never again)
        oldest = con.execute(f"SELECT min({col}) FROM {table}").fetchall()[0][0]
        if oldest is None:
            return None
        start = int(oldest) // width * width
    else:
        start = kept
        if cut is None and not con.execute(
                f"SELECT 1 FROM {table} WHERE {col} >= ? LIMIT 1", [kept]).fetchall():
            return None
    hi = start + CHUNK_MS[tier]
    if cut is not None:
        if start >= cut:
            return None
        hi = min(hi, cut)
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
        rollup.set_kept_since(con, tier, hi)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    report["deleted"][tier] = report["deleted"].get(tier, 0) + int(n)
    return int(n)
