"""Crash safety: a writer process killed with SIGKILL keeps every committed batch exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import duckdb

from legion.aggregator.store import Store
from legion.aggregator.store.packing import count_raw

WRITER = textwrap.dedent("""
    import sys
    from legion.aggregator.store import IncomingBatch, Store
    from legion.aggregator.config import StorageConfig
    from legion.proto import MetricsBatch, Sample, canonical_labels

    path, start = sys.argv[1], int(sys.argv[2])
    store = Store(path, StorageConfig(rollup_interval_ms=100))
    T0 = 1_700_000_000_000
    seq = start
    while True:
        group = []
        for _ in range(5):
            seq += 1
            t = T0 + seq * 1000
            samples = [Sample("m_percent", canonical_labels({"cpu": str(c)}), seq + c / 10, t)
                       for c in range(50)]
            group.append(IncomingBatch("n", 1, seq, MetricsBatch.from_samples(samples), t))
        # resend the previous group too: it must come back as duplicates, never stored twice
        res = store.write(group + [IncomingBatch("n", 1, max(start, seq - 7) or 1,
                                                 group[0].batch, 0)])
        print(" ".join(str(k[2]) for k in res.stored), flush=True)
""")


def run_writer_and_kill(path: str, start: int, commits: int, writer: str = "",
                        deadline_s: float = 60) -> set[int]:
    """Run a writer script (default WRITER) on `path` from seq `start`, SIGKILL it after
    `commits` printed commits; the seqs those commits stored."""
    proc = subprocess.Popen([sys.executable, "-c", writer or WRITER, path, str(start)],
                            stdout=subprocess.PIPE, text=True)
    committed: set[int] = set()
    deadline = time.monotonic() + deadline_s
    try:
        assert proc.stdout is not None
        for _ in range(commits):
            line = proc.stdout.readline()
            assert line, "writer died"
            committed.update(int(x) for x in line.split())
            assert time.monotonic() < deadline
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return committed


def test_sigkill_keeps_committed_batches_exactly_once(tmp_path):
    path = str(tmp_path / "crash.duckdb")
    committed: set[int] = set()
    start = 0
    for round_ in range(3):
        committed |= run_writer_and_kill(path, start, commits=20 + 15 * round_)
        start = max(committed) + 1  # leaves a gap of one seq each round: `missing` must see it
    con = duckdb.connect(path)  # plain DuckDB replays the WAL like Store does
    try:
        # `batches` rows, and the runs the rows older than an hour were folded into (these
        # batches are timestamped in 2023: batch_fold.py)
        rows = con.execute("SELECT seq, count(*) FROM (SELECT seq FROM batches UNION ALL "
                           "SELECT unnest(range(first_seq, last_seq + 1)) FROM batch_runs) "
                           "GROUP BY seq").fetchall()
        pts = count_raw(con)  # rows and packed chunks alike
    finally:
        con.close()
    counts = dict(rows)
    assert all(c == 1 for c in counts.values()), "a batch was stored twice"
    assert committed <= set(counts), "a committed batch was lost"
    assert pts == 50 * len(counts)
    store = Store(path)
    try:
        again = store.write([])
        assert again.stored == ()
        (node,) = store.nodes()
        assert node["points"] == pts and node["last_seq"] == max(counts)
        assert node["missing"] == max(counts) - len(counts)
        # every point of every stored batch is there once, and rollups agree with raw
        store.roll_up(budget_s=30)
        raw = store.query("m_percent", step_ms=60_000, agg="count")
        assert sum(r["value"] for r in raw) == pts
    finally:
        store.close()
