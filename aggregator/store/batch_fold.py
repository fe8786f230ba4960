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

Horizon (`KEEP_ROWS_MS`, one hour): correctness does not depend on it, since the runs remember
every stored seq exactly. What it trades is the cost of opening the file (the gaps-and-islands
over the rows at open took 2.4 s for 48 h of 10 hosts, 1.7 M rows, and grows linearly: 35 M rows
at 200 hosts) against each recent batch's own row (received time, points) for inspection.

Per-commit statements are unchanged (BEGIN, points, batches, COMMIT): the fold runs only in the
rounds, in slices sized by the rounds' pacer (`retention.Pacer`, tier "batches") in what is left
of their budget, and one catch-up slice per maintenance round whatever the budget, so that
folding cannot starve behind checkpoints and the tiers. The catch-up slice is sized in rows, not
minutes (`CATCH_UP_ROWS`, within `CATCH_UP_MS`): its cost follows the rows, so at 200 hosts five
minutes of rows (60,000) took ~112 ms, over a round's 100 ms budget; bounded in rows it stays
inside at any fleet size, and alone still folds faster than rows come in up to 500 hosts (the
light rounds' paced steps fold the rest). A step finds the runs to merge with from the slice's
own (node, epoch) pairs rather than scanning `batches` twice more, and codes nodes with a dict:
about 3x cheaper per row (bench/batch_fold_slice.py).
"""

from __future__ import annotations

import duckdb
import numpy as np

from legion.aggregator.store import columns, rollup

TIER = "batches"
"""The `tier_state` row (and the pacer's tier) of this retention: rows received before it are
folded."""
KEEP_ROWS_MS = 3_600_000
"""Rows received this long ago or less stay one per batch; older ones are folded into runs."""
CATCH_UP_MS = 5 * 60_000
"""Each maintenance round folds at least this much of the rows (if any are due) whatever its
budget, up to `CATCH_UP_ROWS` rows: five times the rate rows come in at the default 60 s between
rounds for a fleet that small."""
CATCH_UP_ROWS = 30_000
"""The most rows that catch-up slice folds (one batch a second from each host: 150 s of 200
hosts, 2.5 times what comes in between two rounds; ~15-25 ms at load 3-4 on 2 cores)."""

_SLICE = "SELECT node, epoch, seq, points, received_ms FROM batches WHERE received_ms < ?"
# The first `max_rows + 1` received times below a bound: how many, the first and the last.
_FIRST_ROWS = """
SELECT count(*), min(r), max(r) FROM (
    SELECT received_ms r FROM batches WHERE received_ms < ? ORDER BY received_ms LIMIT ?)"""
# The runs already folded for the (node, epoch) pairs of the slice (`_f_pairs`, found from the
# slice's own rows rather than by scanning `batches` again), to merge with.
_RUNS_OF_PAIRS = """
SELECT r.* FROM batch_runs r SEMI JOIN _f_pairs p ON r.node = p.node AND r.epoch = p.epoch"""
_DROP_RUNS_OF_PAIRS = """
DELETE FROM batch_runs WHERE EXISTS (
    SELECT 1 FROM _f_pairs p WHERE p.node = batch_runs.node AND p.epoch = batch_runs.epoch)"""

Run = tuple[str, int, int, int, int, int, int]
"""(node, epoch, first_seq, last_seq, points, first_ms, last_ms), a `batch_runs` row."""


def horizon_ms(now_ms: int) -> int:
    """Rows received before this are folded (a whole minute, so slices line up)."""
    return max(0, int(now_ms - KEEP_ROWS_MS) // 60_000 * 60_000)


def step(con: duckdb.DuckDBPyConnection, cut_ms: int, span_ms: int,
         max_rows: int | None = None) -> int | None:
    """Fold the rows received before min(cut_ms, start + span_ms), where start is where the last
    step stopped (or the oldest row), and at most `max_rows` of them (more only if more than
    that share one millisecond); returns rows folded, None when nothing is left to fold."""
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
    if max_rows is not None:
        hi = _row_bound(con, hi, max_rows)
    con.execute("BEGIN TRANSACTION")
    try:
        new = runs_of(con.execute(_SLICE, [hi]).fetchnumpy())
        pairs = sorted({r[:2] for r in new})
        _f_pairs = {"node": columns.objects([p[0] for p in pairs]),  # noqa: F841
                    "epoch": np.asarray([p[1] for p in pairs], np.int64)}
        merged = merge_runs(new, [tuple(r) for r in con.execute(_RUNS_OF_PAIRS).fetchall()]
                            if pairs else [])
        if merged:
            con.execute(_DROP_RUNS_OF_PAIRS)
            node, *ints = zip(*merged, strict=True)
            _f_runs = dict(zip(  # noqa: F841 - read by name below
                ("node", "epoch", "first_seq", "last_seq", "points", "first_ms", "last_ms"),
                [columns.objects(node), *(np.asarray(c, np.int64) for c in ints)], strict=True))
            con.execute("INSERT INTO batch_runs SELECT * FROM _f_runs")
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


def _row_bound(con: duckdb.DuckDBPyConnection, hi: int, max_rows: int) -> int:
    """The end of a slice of at most `max_rows` rows below `hi` (the received time of the row
    after them), or past the first millisecond's rows if they alone are more."""
    n, first, nth = con.execute(_FIRST_ROWS, [hi, max_rows + 1]).fetchall()[0]
    if n <= max_rows:
        return hi
    return int(nth) if nth > first else int(nth) + 1


def runs_of(rows: dict[str, np.ndarray]) -> list[Run]:
    """Runs of consecutive seqs per (node, epoch) of `batches` rows (numpy columns, any order);
    a seq present twice counts once in the run and twice in its points, as it did as rows."""
    n = len(rows["seq"])
    if not n:
        return []
    index: dict[str, int] = {}  # node -> code, in order of appearance (a dict beats sorting)
    code = np.fromiter((index.setdefault(x, len(index)) for x in rows["node"].tolist()),
                       np.int64, n)
    names = np.array(list(index), dtype=object)
    epoch = rows["epoch"].astype(np.int64)
    seq = rows["seq"].astype(np.int64)
    order = np.lexsort((seq, epoch, code))
    code, epoch, seq = code[order], epoch[order], seq[order]
    points = rows["points"].astype(np.int64)[order]
    rec = rows["received_ms"].astype(np.int64)[order]
    brk = np.ones(n, bool)
    brk[1:] = (code[1:] != code[:-1]) | (epoch[1:] != epoch[:-1]) | (seq[1:] > seq[:-1] + 1)
    starts = np.flatnonzero(brk)
    ends = np.r_[starts[1:], n] - 1
    return list(zip(names[code[starts]].tolist(), epoch[starts].tolist(), seq[starts].tolist(),
                    seq[ends].tolist(), np.add.reduceat(points, starts).tolist(),
                    np.minimum.reduceat(rec, starts).tolist(),
                    np.maximum.reduceat(rec, starts).tolist(), strict=True))


def merge_runs(new: list[Run], old: list[Run]) -> list[Run]:
    """Runs (of the slice and those folded before) merged where they overlap or touch."""
    out: list[Run] = []
    for r in sorted(new + old, key=lambda r: (r[0], r[1], r[2], r[3])):
        if out and out[-1][:2] == r[:2] and r[2] <= out[-1][3] + 1:
            o = out[-1]
            out[-1] = (o[0], o[1], o[2], max(o[3], r[3]), o[4] + r[4], min(o[5], r[5]),
                       max(o[6], r[6]))
        else:
            out.append(r)
    return out
