"""Where packed chunks live: one table per UTC hour (`chunks_<ts // 3600000>`), or per rest of the
UTC day when the fleet is small (`chunks_<hour>_<hours>`, see `_table_for`).

DuckDB frees space only when whole row groups die (measured), and a chunk row is tiny next to a
row group, so retention and the disk cap drop whole tables (`drop_hours_before`) instead of
deleting rows that would never give space back. What a row holds: chunk_rows.py.
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb
import numpy as np

from legion.aggregator.store import columns

HOUR_MS = 3_600_000

SMALL_TABLE_BLOCKS = 4
"""Below this many of the file's blocks of payload (1 MiB at DuckDB's default 256 KiB, 256 KiB
at schema.NEW_FILE_BLOCK_SIZE), the next chunk table spans the rest of the UTC day instead of one
hour; 0: always one hour."""

CHUNK_DDL = """CREATE TABLE IF NOT EXISTS {table} (series_id INTEGER NOT NULL,
    chunk_id BIGINT NOT NULL, ts_from BIGINT, t_min BIGINT NOT NULL, t_max BIGINT NOT NULL,
    n INTEGER NOT NULL, data BLOB[] NOT NULL)"""
"""`chunk_id` is unique across the file (counter 'chunk_seq' in tier_state); `ts_from` is the
chunk_id of the chunk (same hour, same table) whose timestamps this one shares, or NULL."""


class ChunkTable(NamedTuple):
    """One table of chunks: hours [start, start + span) (hour = ts // HOUR_MS)."""

    start: int
    span: int

    @property
    def name(self) -> str:
        return f"chunks_{self.start}" if self.span == 1 else f"chunks_{self.start}_{self.span}"

    @property
    def lo_ms(self) -> int:
        return self.start * HOUR_MS

    @property
    def hi_ms(self) -> int:
        return (self.start + self.span) * HOUR_MS


def chunk_tables(con: duckdb.DuckDBPyConnection) -> list[ChunkTable]:
    """The chunk tables, oldest first (in the caller's snapshot)."""
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = "
                       "current_database() AND schema_name = 'main' AND "
                       "table_name LIKE 'chunks\\_%' ESCAPE '\\'").fetchall()
    out = []
    for (name,) in rows:
        parts = name.removeprefix("chunks_").split("_")
        out.append(ChunkTable(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1))
    return sorted(out)


def _table_for(con: duckdb.DuckDBPyConnection, hour: int, tables: list[ChunkTable]
               ) -> ChunkTable:
    """The table holding `hour`'s chunks, created if needed: one hour, or the rest of the UTC
    day when the newest earlier table holds less than SMALL_TABLE_BLOCKS blocks of payload (a
    table costs at least one block, which would dwarf the hour of a small fleet; a day table is
    dropped only once its whole day has expired)."""
    for t in tables:
        if t.start <= hour < t.start + t.span:
            return t
    span = 1
    before = [t for t in tables if t.start < hour]
    if before and _table_bytes(con, before[-1]) < small_table_bytes(con):
        span = 24 - hour % 24
        later = [t.start for t in tables if t.start > hour]
        if later:
            span = min(span, later[0] - hour)
    table = ChunkTable(hour, span)
    con.execute(CHUNK_DDL.format(table=table.name))
    tables.append(table)
    tables.sort()
    return table


def small_table_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """Payload below which an hour's chunk table is small: SMALL_TABLE_BLOCKS of the file's
    blocks."""
    return SMALL_TABLE_BLOCKS * int(con.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = "
        "current_database()").fetchall()[0][0])


def _table_bytes(con: duckdb.DuckDBPyConnection, table: ChunkTable) -> int:
    return int(con.execute(f"SELECT coalesce(sum(list_sum(list_transform(data, lambda x: "
                           f"octet_length(x)))), 0) FROM {table.name}").fetchall()[0][0])


def drop_hours_before(con: duckdb.DuckDBPyConnection, ms: int) -> int:
    """Drop the chunk tables whose hours all end at or before `ms` (inside the caller's
    transaction); returns the points they held."""
    n = 0
    for t in chunk_tables(con):
        if t.hi_ms > ms:
            break
        n += int(con.execute(f"SELECT coalesce(sum(n), 0) FROM {t.name}").fetchall()[0][0])
        con.execute(f"DROP TABLE {t.name}")
    return n


def insert_chunks(con: duckdb.DuckDBPyConnection, chunks: columns.Columns) -> None:
    """Insert chunk rows (`chunk_rows.encode_chunks`) into the tables of their hours, creating
    those tables as needed."""
    hours = chunks["t_min"] // HOUR_MS
    tables = chunk_tables(con)
    for hour in np.unique(hours).tolist():
        table = _table_for(con, hour, tables)
        _part = {k: v[hours == hour] for k, v in chunks.items()}  # noqa: F841 - by name
        con.execute(f"INSERT INTO {table.name} SELECT series_id, chunk_id, "
                    "nullif(ts_from, -1), t_min, t_max, n, data::BLOB[] FROM _part")
