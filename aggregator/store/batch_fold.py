"""Retention of `batches`: old rows fold into `batch_runs`, one row per run of consecutive seqs.

Every accepted batch writes one `batches` row in its commit (exactly-once bookkeeping: ~36,000
rows an hour at 10 hosts), and the per-node bookkeeping is derived from those rows when the file
opens (`writer._LOAD_RANGES`, `_LOAD_NODES`), so rows cannot simply be deleted. A maintenance
step instead folds the rows received before the horizon into `batch_runs(node, epoch,
first_seq, last_seq, points, first_ms, last_ms)`: merged with the runs already folded for the same
(node, epoch), so an agent that never lost a batch keeps one row per epoch. The fold and the
delete are one transaction; the set of stored seqs, each node's points, first and last seen,
epoch and last seq read the same before and after, so a resend of a folded batch is still a
duplicate (however old: an agent's spool is bounded by bytes, not by age).

Horizon (`horizon_ms`): rows live as long as the raw points they describe
(`raw_retention_hours`, 48 h by default; 48 h when raw is kept forever). Correctness does not
depend on it (runs remember every seq); it bounds the table and keeps each recent batch's own
row (received time, points) for inspection while its points are still raw.

Per-commit statements are unchanged (BEGIN, points, batches, COMMIT): the fold runs only in the
maintenance round, in slices sized by the round's pacer (`retention.Pacer`, tier "batches").
"""

from __future__ import annotations

import duckdb

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import rollup

TIER = "batches"
"""The `tier_state` row (and the pacer's tier) of this retention: rows received before it are
folded."""
HOUR_MS = 3_600_000
DEFAULT_KEEP_MS = 48 * HOUR_MS
"""How long rows are kept when raw points are kept forever (`raw_retention_hours` 0)."""

# Runs of the rows being folded, merged with the runs already folded for the same (node, epoch):
# gaps-and-islands over (first_seq, last_seq), a new island where a run starts past the highest
# seq before it plus one.
_MERGED = """
WITH slice AS (
    SELECT node, epoch, seq AS lo, seq AS hi, points, received_ms AS f, received_ms AS l
    FROM batches WHERE received_ms < $hi),
pairs AS (SELECT DISTINCT node, epoch FROM slice),
runs AS (
    SELECT * FROM slice
    UNION ALL
    SELECT r.node, r.epoch, r.first_seq, r.last_seq, r.points, r.first_ms, r.last_ms
    FROM batch_runs r SEMI JOIN pairs p ON r.node = p.node AND r.epoch = p.epoch),
marked AS (
    SELECT *, CASE WHEN lo <= max(hi) OVER (PARTITION BY node, epoch ORDER BY lo, hi
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + 1 THEN 0 ELSE 1 END AS brk
    FROM runs),
grouped AS (
    SELECT *, sum(brk) OVER (PARTITION BY node, epoch ORDER BY lo, hi ROWS UNBOUNDED PRECEDING)
        AS g
    FROM marked)
SELECT node, epoch, min(lo) AS first_seq, max(hi) AS last_seq, sum(points)::BIGINT AS points,
       min(f) AS first_ms, max(l) AS last_ms
FROM grouped GROUP BY node, epoch, g"""

_DROP_MERGED = """
DELETE FROM batch_runs WHERE EXISTS (
    SELECT 1 FROM batches b WHERE b.received_ms < $hi AND b.node = batch_runs.node
    AND b.epoch = batch_runs.epoch)"""


def horizon_ms(config: StorageConfig, now_ms: int) -> int:
    """Rows received before this are folded (a whole minute, so slices line up)."""
    keep = config.raw_retention_hours * HOUR_MS
    keep = keep if keep > 0 else DEFAULT_KEEP_MS
    return max(0, int(now_ms - keep) // 60_000 * 60_000)


def step(con: duckdb.DuckDBPyConnection, cut_ms: int, span_ms: int) -> int | None:
    """Fold the rows received before min(cut_ms, start + span_ms), where start is where the last
    step stopped (or the oldest row); returns rows folded, None when nothing is left to fold."""
    kept = rollup.kept_since(con, TIER)
    start = kept
    if kept == 0:
        oldest = con.execute("SELECT min(received_ms) FROM batches").fetchall()[0][0]
        if oldest is None:
            return None
        start = int(oldest) // 60_000 * 60_000
    if start >= cut_ms:
        return None
    hi = min(cut_ms, start + span_ms)
    con.execute("BEGIN TRANSACTION")
    try:
        # Read by name below (a replacement scan of the local Arrow table).
        _f_merged = con.sql(_MERGED, params={"hi": hi}).to_arrow_table()  # noqa: F841
        con.execute(_DROP_MERGED, {"hi": hi})
        con.execute("INSERT INTO batch_runs SELECT * FROM _f_merged")
        n = int(con.execute("DELETE FROM batches WHERE received_ms < ?", [hi]).fetchall()[0][0])
        if not n:  # an empty stretch (no agent then): the next step starts at the next row
            nxt = con.execute("SELECT min(received_ms) FROM batches").fetchall()[0][0]
            hi = cut_ms if nxt is None else max(hi, min(cut_ms, int(nxt) // 60_000 * 60_000))
        rollup.set_kept_since(con, TIER, hi)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return n
