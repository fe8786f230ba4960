"""Seqs acked `rejected` (policy, limits, oversized frames), kept in the file.

A rejected batch is never stored, so it is not `missing` either; `Store.nodes()` reports such
seqs apart as `rejected`. They are written (table ``rejected_batches``, schema v4) before the
`rejected` ack goes out, so an agent that dropped the batch on that ack is never counted as
having lost it, across aggregator restarts and kill -9 too.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np

from legion.aggregator.store.columns import objects
from legion.kernel.errors import StoreError

LOAD_RANGES = """
SELECT node, epoch, min(seq), max(seq) FROM (
    SELECT node, epoch, seq, seq - row_number() OVER (PARTITION BY node, epoch ORDER BY seq) AS g
    FROM (SELECT DISTINCT node, epoch, seq FROM rejected_batches))
GROUP BY node, epoch, g"""


def load_ranges(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, int, int]]:
    """(node, epoch, first, last) runs of every rejected seq in the file."""
    try:
        return [(str(n), int(e), int(a), int(b))
                for n, e, a, b in con.execute(LOAD_RANGES).fetchall()]
    except duckdb.Error as exc:
        raise StoreError(f"cannot load rejected seqs: {exc}") from exc


def record(con: duckdb.DuckDBPyConnection, node: str, epoch: int, seqs: Sequence[int],
           now_ms: int) -> None:
    """Write rejected seqs of one (node, epoch) in one transaction; StoreError on failure."""
    _r_rows = {"node": objects([node] * len(seqs)),  # noqa: F841 - read by name below
               "epoch": np.full(len(seqs), epoch, np.int64),
               "seq": np.asarray(list(seqs), np.int64),
               "rejected_ms": np.full(len(seqs), now_ms, np.int64)}
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("INSERT INTO rejected_batches SELECT * FROM _r_rows")
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except duckdb.TransactionException:
                pass
            raise
    except duckdb.Error as exc:
        raise StoreError(f"cannot record {len(seqs)} rejected seqs of {node}: {exc}") from exc
