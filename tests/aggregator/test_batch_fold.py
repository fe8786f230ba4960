"""Retention of `batches` (store/batch_fold.py): old rows fold into runs of seqs; the bookkeeping
read at open, the duplicate check and `nodes()` are the same before and after, across restarts,
a v5 file migrates, and a writer killed with SIGKILL while folding loses nothing and stores
nothing twice."""

from __future__ import annotations

import textwrap
import time

import duckdb

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store, batch_fold, retention, rollup
from legion.aggregator.store.schema import SCHEMA_VERSION
from legion.proto import MetricsBatch, Sample, canonical_labels
from tests.aggregator.old_store_files import old_store_file
from tests.aggregator.test_store_crash import run_writer_and_kill

MIN = 60_000
HOUR = 3_600_000
NOW = 1_800_000_000_000
T0 = NOW - 3 * HOUR


def batch(node: str, seq: int, epoch: int = 1, received_ms: int | None = None) -> IncomingBatch:
    """Two points (a cpu and a memory sample) received at T0 + seq minutes by default."""
    t = T0 + seq * MIN if received_ms is None else received_ms
    samples = [Sample("cpu_percent", canonical_labels({"cpu": "0"}), float(seq), t),
               Sample("mem_percent", (), 1.0, t)]
    return IncomingBatch(node, epoch, seq, MetricsBatch.from_samples(samples), t)


def table(store: Store, sql: str) -> list[tuple]:
    with store._cursor() as cur:
        return cur.execute(sql).fetchall()


def open_store(path, retention_h: float = 1.0) -> Store:
    return Store(path, StorageConfig(raw_retention_hours=retention_h), clock_ms=lambda: NOW)


def test_folding_keeps_the_bookkeeping_and_refuses_resends(tmp_path):
    path = tmp_path / "f.duckdb"
    s = open_store(path)
    # web: 1..170 except 40 (lost by the agent); web epoch 2 after a restart; db: 1..30
    s.write([batch("web", q) for q in range(1, 171) if q != 40])
    s.write([batch("web", q, epoch=2, received_ms=NOW - 30 * MIN + q) for q in range(1, 6)])
    s.write([batch("db", q) for q in range(1, 31)])
    before = s.nodes()
    ranges = s.stored_ranges("web", 1)
    assert ranges == [(1, 39), (41, 170)]
    s.maintain(budget_s=30)
    # rows received before the horizon (an hour ago) are folded; newer rows stay one per batch
    horizon = batch_fold.horizon_ms(NOW)
    assert table(s, "SELECT count(*), min(received_ms) >= "
                 f"{horizon} FROM batches") == [(5 + 170 - 120 + 1, True)]
    assert sorted(table(s, "SELECT node, epoch, first_seq, last_seq, points FROM batch_runs")) \
        == [("db", 1, 1, 30, 60), ("web", 1, 1, 39, 78), ("web", 1, 41, 119, 158)]
    assert s.nodes() == before and s.stored_ranges("web", 1) == ranges
    s.close()
    s = open_store(path)
    try:
        assert s.nodes() == before and s.stored_ranges("web", 1) == ranges
        again = s.write([batch("web", 7), batch("db", 30), batch("web", 150), batch("web", 40)])
        assert again.duplicates == (("web", 1, 7), ("db", 1, 30), ("web", 1, 150))
        assert again.stored == (("web", 1, 40),)  # never stored: still welcome
        # the late seq 40 folds into one run with its neighbours once it is old enough
        later = NOW + 3 * HOUR
        s._clock = lambda: later
        s.maintain(budget_s=30)
        assert table(s, "SELECT count(*) FROM batches") == [(0,)]
        assert sorted(table(s, "SELECT node, epoch, first_seq, last_seq, points "
                               "FROM batch_runs")) == [
            ("db", 1, 1, 30, 60), ("web", 1, 1, 170, 340), ("web", 2, 1, 5, 10)]
        after = s.nodes()
    finally:
        s.close()
    s = open_store(path)
    try:
        assert s.nodes() == after and after[1]["points"] == before[1]["points"] + 2
        assert s.write([batch("web", q) for q in (1, 40, 170)]).stored == ()
    finally:
        s.close()


def test_a_step_folds_one_bounded_slice(tmp_path):
    s = open_store(tmp_path / "s.duckdb")
    try:
        s.write([batch("n", q) for q in range(1, 121)])  # one a minute, T0 + 1 min .. + 2 h
        con = s._open()
        cut = NOW - HOUR
        assert batch_fold.step(con, cut, 10 * MIN) == 10  # from the oldest row's minute: 1..10
        assert rollup.kept_since(con, batch_fold.TIER) == T0 + 11 * MIN
        assert batch_fold.step(con, cut, 10 * MIN) == 10  # then 11..20, from where it stopped
        assert table(s, "SELECT first_seq, last_seq FROM batch_runs") == [(1, 20)]
        while batch_fold.step(con, cut, 30 * MIN) is not None:
            pass
        assert table(s, "SELECT first_seq, last_seq FROM batch_runs") == [(1, 119)]
        assert table(s, "SELECT min(seq), max(seq) FROM batches") == [(120, 120)]
        s.write([batch("n", 121, received_ms=NOW - 10 * MIN)])
        later = NOW + 5 * HOUR
        assert batch_fold.step(con, later, 10 * MIN) == 1  # seq 120
        # an empty stretch is crossed in one step, not a slice at a time
        assert batch_fold.step(con, later, 10 * MIN) == 0
        assert rollup.kept_since(con, batch_fold.TIER) == NOW - 10 * MIN
        assert batch_fold.step(con, later, 10 * MIN) == 1  # seq 121
        assert batch_fold.step(con, later, 10 * MIN) == 0
        assert rollup.kept_since(con, batch_fold.TIER) == later
        assert batch_fold.step(con, later, 10 * MIN) is None
        assert table(s, "SELECT first_seq, last_seq, points FROM batch_runs") == [(1, 121, 242)]
    finally:
        s.close()


def test_a_row_bound_slice_holds_at_most_that_many_rows_and_folds_exactly(tmp_path):
    """Slices sized in rows: each holds at most `max_rows` rows (more only when more than that
    share one millisecond, so a step always moves on), and folding in such slices gives the runs
    one fold of everything would, with the bookkeeping unchanged across a reopen."""
    path = tmp_path / "r.duckdb"
    s = open_store(path)
    t = T0 + MIN
    # three nodes interleaved a millisecond apart, a lost seq, a second epoch, then a burst of
    # 12 rows received in one millisecond
    s.write([batch(f"n{q % 3}", q // 3 + 1, received_ms=t + q) for q in range(90) if q != 40])
    s.write([batch("n0", q, epoch=2, received_ms=t + 200) for q in range(1, 13)])
    s.write([batch("n1", q, received_ms=t + 300 + q) for q in range(31, 41)])
    want_nodes, want_ranges = s.nodes(), s.stored_ranges("n1", 1)
    con = s._open()
    cut = NOW - HOUR
    sizes = []
    while (n := batch_fold.step(con, cut, 10 * HOUR, max_rows=7)) is not None:
        sizes.append(n)
    # 89 rows in 7s, the last slice stopping short of the burst, the burst whole, then 10 rows
    assert sizes == [7] * 12 + [5, 12, 7, 3]
    assert table(s, "SELECT count(*) FROM batches") == [(0,)]
    assert sorted(table(s, "SELECT node, epoch, first_seq, last_seq, points FROM batch_runs")) \
        == [("n0", 1, 1, 30, 60), ("n0", 2, 1, 12, 24), ("n1", 1, 1, 13, 26),
            ("n1", 1, 15, 40, 52), ("n2", 1, 1, 30, 60)]
    assert s.nodes() == want_nodes and s.stored_ranges("n1", 1) == want_ranges
    s.close()
    s = open_store(path)
    try:
        assert s.nodes() == want_nodes and s.stored_ranges("n1", 1) == want_ranges
        assert len(s.write([batch("n1", 14), batch("n0", 12, epoch=2)]).stored) == 1
    finally:
        s.close()


def test_the_catch_up_slice_is_bounded_in_rows_at_fleet_size(tmp_path):
    """A maintenance round with no budget left folds one catch-up slice: 5 minutes of rows of a
    small fleet, but at most `CATCH_UP_ROWS` rows of a large one (400 hosts, one batch a second
    each: 120,000 rows in 5 minutes), so the step stays within a round's budget."""
    for hosts, want_s in ((5, 300), (400, batch_fold.CATCH_UP_ROWS // 400)):
        s = open_store(tmp_path / f"c{hosts}.duckdb")
        try:
            con = s._open()
            t = NOW - 3 * HOUR  # 10 minutes of rows, whole minutes, all past the horizon
            con.execute(f"""INSERT INTO batches SELECT 'h' || (i % {hosts}), 1,
                            i // {hosts} + 1, 3, {t} + (i // {hosts}) * 1000
                            FROM range({hosts} * 600) t(i)""")
            pacer = retention.Pacer()
            folded = retention.fold_batches(con, NOW, pacer, time.monotonic(),
                                            batch_fold.CATCH_UP_MS)
            assert folded == hosts * want_s <= batch_fold.CATCH_UP_ROWS
            assert table(s, "SELECT min(received_ms) FROM batches") == [(t + want_s * 1000,)]
            assert rollup.kept_since(con, batch_fold.TIER) == t + want_s * 1000
            assert table(s, "SELECT count(*), min(first_seq), max(last_seq), sum(points) "
                            "FROM batch_runs") == [(hosts, 1, want_s, 3 * hosts * want_s)]
            # a row-bound step may cover less than its span: it teaches the pacer nothing
            assert batch_fold.TIER not in pacer.cost
        finally:
            s.close()


def test_retention_folds_in_paced_slices_whatever_raw_retention(tmp_path):
    """With raw (and the tiers) kept forever, rows older than an hour are folded all the same; a
    maintenance round with no budget left still folds one catch-up slice (5 minutes of rows), a
    round with budget folds the rest."""
    forever = StorageConfig(raw_retention_hours=0, rollup_1m_retention_days=0,
                            rollup_1h_retention_days=0, rollup_1d_retention_days=0)
    s = Store(tmp_path / "p.duckdb", forever, clock_ms=lambda: NOW)
    try:
        old = NOW - 3 * HOUR
        s.write([batch("n", q, received_ms=old + q * MIN) for q in range(1, 181)])
        con = s._open()
        pacer = retention.Pacer()
        left = []
        for _ in range(3):
            report = retention.run(con, forever, s.path, NOW, 0.0, pacer=pacer)
            assert report["deleted"] == {"batches": 5} and report["steps"] == 0
            left.append(table(s, "SELECT count(*) FROM batches")[0][0])
        assert left == [175, 170, 165]
        # a light round's share: paced steps only while they fit (none with no time left)
        assert retention.fold_batches(con, NOW, pacer, time.monotonic()) == 0
        report = retention.run(con, forever, s.path, NOW, 30.0, pacer=pacer)
        # rows received from an hour ago on stay (seq 120..180)
        assert report["deleted"] == {"batches": 120 - 15 - 1}
        assert table(s, "SELECT min(seq), count(*) FROM batches") == [(120, 61)]
        assert s.nodes()[0]["points"] == 360 and s.nodes()[0]["missing"] == 0
    finally:
        s.close()


def test_a_version_5_file_is_migrated_and_folded(tmp_path):
    path = tmp_path / "v5.duckdb"
    con = old_store_file(path, 5, "old", {}, T0, range(1, 121), "i")
    con.execute(f"INSERT INTO batches SELECT 'old', 3, i, 1, {T0} + i * 60000 "
                "FROM range(1, 121) t(i) WHERE i <> 7")
    tables = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables").fetchall()}
    assert "batch_runs" not in tables and "nodes" not in tables
    con.close()
    s = open_store(path)
    try:
        assert table(s, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)] \
            and SCHEMA_VERSION == 6
        want = [{"node": "old", "first_seen_ms": T0 + MIN, "last_seen_ms": T0 + 120 * MIN,
                 "points": 119, "epoch": 3, "last_seq": 120, "missing": 1, "rejected": 0,
                 "dropped": 0}]
        assert s.nodes() == want
        s.maintain(budget_s=30)
        assert table(s, "SELECT first_seq, last_seq, points FROM batch_runs ORDER BY 1") \
            == [(1, 6, 6), (8, 119, 112)]
        assert s.nodes() == want
        assert s.write([IncomingBatch("old", 3, 5, batch("old", 5).batch, NOW)]).duplicates
    finally:
        s.close()
    s = open_store(path)
    try:
        assert s.nodes() == want
    finally:
        s.close()


WRITER = textwrap.dedent("""
    import sys
    from legion.aggregator.config import StorageConfig
    from legion.aggregator.store import IncomingBatch, Store
    from legion.proto import MetricsBatch, Sample, canonical_labels

    path, start = sys.argv[1], int(sys.argv[2])
    MIN = 60_000
    T0 = 1_800_000_000_000
    now = {"ms": T0 + start * MIN}
    # each batch is a minute of data; maintenance (every 60 s of the clock) runs in every write,
    # and with 1 h of raw retention folds `batches` rows as it goes
    store = Store(path, StorageConfig(raw_retention_hours=1, maintenance_budget_ms=50),
                  clock_ms=lambda: now["ms"])
    seq = start
    while True:
        group = []
        for _ in range(3):
            seq += 1
            t = T0 + seq * MIN
            samples = [Sample("m_percent", canonical_labels({"cpu": str(c)}), seq + c, t)
                       for c in range(4)]
            group.append(IncomingBatch("n", 1, seq, MetricsBatch.from_samples(samples), t))
        now["ms"] = T0 + seq * MIN
        # resend an old batch each time (folded after the first hour): always a duplicate
        old = max(1, seq - 90)
        res = store.write(group + [IncomingBatch("n", 1, old, group[0].batch, now["ms"])])
        assert ("n", 1, old) in res.duplicates or old == start, res  # start: never stored
        print(" ".join(str(k[2]) for k in res.stored), flush=True)
""")


def test_sigkill_while_folding_keeps_every_batch_once_and_refuses_resends(tmp_path):
    path = str(tmp_path / "crash.duckdb")
    committed: set[int] = set()
    start = 0
    for commits in (45, 37, 41):  # 3 batches a commit, a minute each: hours of data
        committed |= run_writer_and_kill(path, start, commits, WRITER, deadline_s=240)
        start = max(committed) + 1  # leaves a gap of one seq each time: `missing` must see it
    con = duckdb.connect(path)  # plain DuckDB replays the WAL like Store does
    try:
        rows = [r[0] for r in con.execute("SELECT seq FROM batches").fetchall()]
        runs = con.execute("SELECT first_seq, last_seq, points FROM batch_runs "
                           "ORDER BY first_seq").fetchall()
    finally:
        con.close()
    assert runs, "nothing was folded"
    folded = [q for lo, hi, _ in runs for q in range(lo, hi + 1)]
    assert sum(p for *_, p in runs) == 4 * len(folded)
    stored = rows + folded
    assert len(stored) == len(set(stored)), "a batch was stored twice"
    assert committed <= set(stored), "a committed batch was lost"
    assert len(set(stored) - committed) <= 3 * 3  # at most the last write of each run
    s = Store(path, StorageConfig(raw_retention_hours=1),
              clock_ms=lambda: 1_800_000_000_000 + start * MIN)
    try:
        again = s.write([IncomingBatch("n", 1, q, batch("n", q).batch, NOW) for q in stored])
        assert again.stored == () and len(again.duplicates) == len(stored)
        (node,) = s.nodes()
        assert node["points"] == 4 * len(stored) and node["last_seq"] == max(stored)
        assert node["missing"] == max(stored) - len(stored)
        # every point is in the tiers once (raw past its hour was deleted after its rollup)
        s.roll_up(budget_s=60, include_open=True)
        counts = s.query("m_percent", step_ms=HOUR, agg="count",
                         since_ms=1_800_000_000_000 // HOUR * HOUR)
        assert sum(r["value"] for r in counts) == 4 * len(stored)
    finally:
        s.close()
