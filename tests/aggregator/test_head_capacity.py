"""The query head sizes its minute blocks to the series there are (issue 17: the aggregator's
memory at one agent): one agent's 116 series take about 116-row minutes, not 1,024, doubling
as series come, with the same answers as DuckDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store
from legion.proto import MetricsBatch, Sample, canonical_labels
from tests.aggregator.test_query_head import HOUR, MIN, T0, assert_same

ROW_BYTES = 6 * 8  # min, max, sum, count, last_ts, last


def host_batch(seq: int, ts: int, series: int) -> IncomingBatch:
    """One agent's tick: `series` gauges, one point each."""
    samples = [Sample("host", canonical_labels({"i": str(i)}), float((i * seq) % 97), ts + i)
               for i in range(series)]
    return IncomingBatch("n1", 1, seq, MetricsBatch.from_samples(samples), ts)


def test_one_agent_head_takes_rows_for_its_series_then_doubles(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.duckdb", StorageConfig(
        rollup_interval_ms=10**9, maintenance_interval_secs=10**9),
        clock_ms=lambda: T0 + HOUR)
    try:
        store.write([host_batch(m + 1, T0 + m * MIN, 116) for m in range(10)])
        store.roll_up(budget_s=60, include_open=True)
        head = store.head
        assert head is not None
        assert store.query("host", since_ms=T0, step_ms=MIN)  # a dashboard's query loads it
        assert head.loads == 1 and head.start == 0
        rows = head._ring.shape[1]  # noqa: SLF001
        assert 116 <= rows <= 128  # the series ids, not 1,024 (8x the memory)
        assert head.nbytes() == 10 * rows * ROW_BYTES
        store.write([host_batch(11 + m, T0 + (10 + m) * MIN, 150) for m in range(5)])
        assert head._ring.shape[1:] == (2 * rows, 6)  # noqa: SLF001 - ids past it: doubled
        assert head.nbytes() == 15 * 2 * rows * ROW_BYTES  # and every minute kept
        assert assert_same(store, np.random.default_rng(3), T0, T0 + 15 * MIN, 40) > 0
        got = store.query("host", since_ms=T0 + 10 * MIN, step_ms=MIN, agg="count",
                          group_by="*")
        assert [r["value"] for r in got] == [150.0] * 5
    finally:
        store.close()


def test_head_keeps_at_most_query_head_hours_plus_the_alignment_hour(tmp_path: Path) -> None:
    # One agent's series fit the 64 MiB for days: the bound in time is what stops the growth.
    store = Store(tmp_path / "h.duckdb", StorageConfig(
        rollup_interval_ms=10**9, maintenance_interval_secs=10**9, query_head_hours=1.0),
        clock_ms=lambda: T0 + 4 * HOUR)
    try:
        store.write([host_batch(m + 1, T0 + m * MIN, 10) for m in range(150)])
        store.roll_up(budget_s=60, include_open=True)
        head = store.head
        assert head is not None and head.span_minutes == 120
        assert store.query("host", since_ms=T0 + 100 * MIN, step_ms=MIN)  # loads the head
        rows = head._ring.shape[1]  # noqa: SLF001
        assert head.start == T0 + 30 * MIN and head.nbytes() == 120 * rows * ROW_BYTES
        store.write([host_batch(151 + m, T0 + (150 + m) * MIN, 10) for m in range(10)])
        assert head.start == T0 + 40 * MIN and head.nbytes() == 120 * rows * ROW_BYTES
        hits = head.hits
        store.query("host", since_ms=T0 + 100 * MIN, step_ms=5 * MIN)
        store.query("host", since_ms=T0, step_ms=5 * MIN)  # older than the head: DuckDB's
        assert head.hits == hits + 1
        assert assert_same(store, np.random.default_rng(5), T0, T0 + 160 * MIN, 40) > 0
    finally:
        store.close()
