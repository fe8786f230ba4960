"""Parquet archive: raw points, hive-partitioned by UTC date, readable by plain DuckDB or pandas.

Layout: ``OUT/date=YYYY-MM-DD/<metric-or-all>-<from_ms>-<until_ms>.parquet``, one file per UTC
hour with data (packed raw points are decoded an hour at a time, so memory stays bounded by an
hour of the fleet), with columns
``ts_ms`` (int64), ``ts`` (timestamp, UTC), ``node``, ``metric``, ``labels`` (map<string,string>),
``value`` (double), sorted by node, metric, labels, ts. Re-exporting a range writes the same
file names, so an export is idempotent. Read back with
``duckdb.sql("SELECT * FROM read_parquet('OUT/**/*.parquet', hive_partitioning = true)")``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from legion.aggregator.store.chunk_tables import chunk_tables
from legion.aggregator.store.packing import RawSource
from legion.kernel.errors import StoreError

if TYPE_CHECKING:
    from legion.aggregator.store.store import Store

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

_SELECT = """
SELECT p.ts AS ts_ms, make_timestamp(p.ts * 1000) AS ts, s.node, s.name AS metric,
       s.labels, p.value
FROM {points} p JOIN series s ON p.series_id = s.id
WHERE p.ts >= {lo} AND p.ts < {hi} {metric}
ORDER BY s.node, s.name, s.labels_key, p.ts"""


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _copy(con: duckdb.DuckDBPyConnection, out_dir: Path, lo: int, hi: int,
          metric: str | None, stem: str, key: str | None = None) -> int:
    """Write the points of [lo, hi) (inside one UTC day) to one Parquet file; returns rows."""
    cond = "" if metric is None else "AND s.name = $metric"
    params = {} if metric is None else {"metric": metric}
    ids = None if metric is None else [int(r[0]) for r in con.execute(
        "SELECT id FROM series WHERE name = $metric", params).fetchall()]
    part = out_dir / f"date={_day(lo)}"
    target = part / f"{stem}-{lo}-{hi}.parquet"
    tmp = target.with_suffix(".parquet.tmp")
    enc = "" if key is None else f", ENCRYPTION_CONFIG {{footer_key: '{key}'}}"
    con.execute("BEGIN TRANSACTION")  # one snapshot: packing moves points into chunks
    try:
        with RawSource(con, ids, lo, hi) as points:
            select = _SELECT.format(points=points, lo=lo, hi=hi, metric=cond)
            n = con.execute(f"SELECT count(*) FROM ({select})", params).fetchall()[0][0]
            if n:
                part.mkdir(parents=True, exist_ok=True)
                con.execute(f"COPY ({select}) TO '{tmp}' (FORMAT parquet, "
                            f"COMPRESSION zstd{enc})", params)
    finally:
        con.execute("COMMIT")
    if not n:
        return 0
    tmp.replace(target)  # a crash never leaves a half file under the final name
    return int(n)


def hour_pieces(since_ms: int, until_ms: int) -> list[tuple[int, int]]:
    """Split [since, until) at whole UTC hours (so also at midnights)."""
    out = []
    lo = since_ms
    while lo < until_ms:
        hi = min(until_ms, (lo // HOUR_MS + 1) * HOUR_MS)
        out.append((lo, hi))
        lo = hi
    return out


def hours_with_data(con: duckdb.DuckDBPyConnection, since_ms: int, until_ms: int) -> set[int]:
    """UTC hours (ts // HOUR_MS) of [since, until) that may hold raw points: those of the raw
    tables, and every hour a chunk table covers."""
    hours: set[int] = set()
    for table in ("points", "late_points"):
        hours.update(int(r[0]) for r in con.execute(
            f"SELECT DISTINCT ts // {HOUR_MS} FROM {table} WHERE ts >= ? AND ts < ?",
            [since_ms, until_ms]).fetchall())
    lo_h, hi_h = since_ms // HOUR_MS, (until_ms - 1) // HOUR_MS
    for t in chunk_tables(con):
        hours.update(range(max(t.start, lo_h), min(t.start + t.span - 1, hi_h) + 1))
    return hours


def archive_chunk(con: duckdb.DuckDBPyConnection, out_dir: Path, lo: int, hi: int,
                  key: str | None = None) -> int:
    """Archive every raw point of [lo, hi) before retention deletes it; returns rows written.

    With `key` (a name given to `PRAGMA add_parquet_key`) the files are Parquet-encrypted
    (AES-GCM, footer and columns); read them with
    `read_parquet(..., encryption_config = {footer_key: 'legion_archive'})` after adding the key.
    """
    return sum(_copy(con, out_dir, a, b, None, "archive", key) for a, b in hour_pieces(lo, hi))


def export_parquet(store: Store, since_ms: int, until_ms: int, metric: str | None = None,
                   out_dir: str | Path = "export",
                   progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Export raw points of [since, until) to Parquet under out_dir, one file per UTC hour with
    data; `progress(done, total)` after each hour."""
    if until_ms <= since_ms:
        raise StoreError(f"empty export range: since {since_ms} >= until {until_ms}")
    out = Path(out_dir)
    with store._cursor() as cur:  # noqa: SLF001 - same package
        hours = hours_with_data(cur, since_ms, until_ms)
    # Only hours that hold points: the cost follows the data, not the range (3650 days were
    # 87,600 hourly queries).
    pieces = [p for p in hour_pieces(since_ms, until_ms) if p[0] // HOUR_MS in hours]
    stem = "all" if metric is None else "".join(c if c.isalnum() or c in "_:" else "_"
                                               for c in metric)
    rows = files = 0
    with store._cursor() as cur:  # noqa: SLF001 - same package
        for i, (lo, hi) in enumerate(pieces):
            n = _copy(cur, out, lo, hi, metric, stem)
            rows += n
            files += 1 if n else 0
            if progress is not None:
                progress(i + 1, len(pieces))
    days = len({lo // DAY_MS for lo, _ in pieces})
    return {"rows": rows, "files": files, "days": days}
