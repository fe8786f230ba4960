"""The WAL is folded after a round while the writer is idle (store/idle_checkpoint.py), and left
to the budgeted rule while writes keep the writer busy."""

from __future__ import annotations

from pathlib import Path

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store
from legion.aggregator.store.idle_checkpoint import CHECKPOINT_IDLE_WAL, WriterLoad
from legion.proto import MetricsBatch, Sample, canonical_labels

T0 = 1_800_000_000_000


def big_batch(seq: int) -> IncomingBatch:
    """5,000 series x 10 points: over a MiB of WAL."""
    samples = [Sample("disk_io_bytes", canonical_labels({"dev": f"d{i}"}), float(i + k),
                      T0 + k * 1000) for i in range(5000) for k in range(10)]
    return IncomingBatch("n", 1, seq, MetricsBatch.from_samples(samples), T0)


def wal_size(store: Store) -> int:
    wal = Path(str(store.path) + ".wal")
    return wal.stat().st_size if wal.exists() else 0


def run_with_timer(tmp_path: Path, step_s: float, gap_s: float) -> tuple[int, int]:
    """WAL after a big write, and after the next write `gap_s` later (each write runs the light
    round that is due); the store's timer advances `step_s` at every reading (0: writes take no
    time)."""
    t = {"s": 0.0}

    def timer() -> float:
        t["s"] += step_s
        return t["s"]

    store = Store(tmp_path / "w.duckdb", StorageConfig(), clock_ms=lambda: T0 + 20_000,
                  timer_s=timer)
    try:
        store.write([big_batch(1)])
        first = wal_size(store)
        t["s"] += gap_s
        store.write([IncomingBatch("n", 1, 2, MetricsBatch.from_samples(
            [Sample("disk_io_bytes", canonical_labels({"dev": "d0"}), 1.0, T0 + 11_000)]),
            T0)])
        return first, wal_size(store)
    finally:
        store._con.close()  # no checkpoint on close: the WAL is what the test looks at
        store._con = None


def test_an_idle_writer_folds_the_wal_after_its_round(tmp_path):
    before, after = run_with_timer(tmp_path, 0.0, 6.0)  # the light round comes with write 2
    assert before >= CHECKPOINT_IDLE_WAL
    assert after < CHECKPOINT_IDLE_WAL // 4


def test_a_busy_writer_leaves_the_wal_to_the_budgeted_rule(tmp_path):
    # a write takes 2 s of the store's time, and a round is due after each: a third of the
    # time in writes
    before, after = run_with_timer(tmp_path, 2.0, 0.0)
    assert before >= CHECKPOINT_IDLE_WAL
    assert after >= before


def test_writer_load_is_measured_per_window():
    load = WriterLoad(0.0)
    load.note_write(2.0)
    assert not load.idle(4.0)  # half the window in writes
    load.note_write(0.5)
    assert load.idle(8.0)  # an eighth: a new window started at 4.0
    assert not load.idle(8.0)  # an empty window says nothing
