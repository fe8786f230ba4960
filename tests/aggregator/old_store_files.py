"""Store files as earlier builds made them, for the tests that migrate and open them."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from legion.aggregator.store.schema import DDL_V1, MIGRATIONS


def old_store_file(path: Path, version: int, node: str, labels: dict[str, str], t0: int,
                   minutes: range, value_sql: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB file at schema `version` (the v1 DDL plus migrations 1 .. version - 1, DuckDB's
    default block size) holding one `cpu_percent` series of `node` with a point at t0 + i
    minutes for each i in `minutes`, valued `value_sql` (SQL of i); returned open, so the caller
    can add rows, check it and close it."""
    con = duckdb.connect(str(path))
    for stmt in DDL_V1:
        con.execute(stmt)
    con.execute("INSERT INTO schema_version VALUES (1, 0)")
    for v in range(1, version):
        for stmt in MIGRATIONS[v]:
            con.execute(stmt)
        con.execute("INSERT INTO schema_version VALUES (?, 0)", [v + 1])
    pairs = sorted(labels.items())
    label_map = "MAP {" + ", ".join(f"'{k}': '{v}'" for k, v in pairs) + "}"
    con.execute(f"INSERT INTO series VALUES (1, ?, 'cpu_percent', ?, {label_map}, 0)",
                [node, json.dumps(pairs, separators=(",", ":"))])
    con.execute(f"INSERT INTO points SELECT 1, {t0} + i * 60000, {value_sql} "
                f"FROM range({minutes.start}, {minutes.stop}) t(i)")
    return con
