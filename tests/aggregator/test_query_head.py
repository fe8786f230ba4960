"""The query head (store/head.py) answers exactly what the DuckDB path answers: random ranges,
steps, aggregations, group_by and rate, on a real DuckDB file with packed hours, late points of
packed windows, dirty minutes and hours already materialised; fed by writes after it loaded,
and loaded afresh from the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store
from legion.proto import MetricsBatch, Sample, canonical_labels

T0 = 1_700_006_400_000  # a UTC midnight
MIN, HOUR = 60_000, 3_600_000
NODES, CPUS = ("a", "b", "c"), ("0", "1", "total")
AGGS = ("avg", "min", "max", "sum", "count", "last", "rate")
GROUPS = (None, "*", "node", "cpu", "node,cpu")


def batches(rng: np.random.Generator, lo: int, hi: int, every_ms: int, seq0: int,
            nodes: tuple[str, ...] = NODES) -> list[IncomingBatch]:
    """One batch per node and tick in [lo, hi): a gauge per cpu and a counter. Timestamps are
    unique per series, so `last` over a group has no ties."""
    out = []
    for i, t in enumerate(range(lo, hi, every_ms)):
        for n, node in enumerate(nodes):
            samples = [Sample("cpu_percent", canonical_labels({"cpu": c}),
                              round(float(rng.normal(50, 25)), 1), t + 7 * n + c_i)
                       for c_i, c in enumerate(CPUS)]
            samples.append(Sample("bytes_total", canonical_labels({"if": "eth0"}),
                                  float((t // 1000) * 3 % 100_000), t + 7 * n))
            out.append(IncomingBatch(node, 1, seq0 + i, MetricsBatch.from_samples(samples), t))
    return out


def random_query(rng: np.random.Generator, lo: int, hi: int) -> dict[str, Any]:
    agg = str(rng.choice(AGGS))
    since = int(rng.integers(lo, hi - 10 * MIN))
    return {"metric": "bytes_total" if agg == "rate" else "cpu_percent", "agg": agg,
            "step_ms": int(rng.choice([MIN, 2 * MIN, 5 * MIN, 15 * MIN, HOUR])),
            "since_ms": since, "until_ms": int(rng.integers(since + MIN, hi + 2 * MIN)),
            "group_by": GROUPS[int(rng.integers(len(GROUPS)))] if agg != "rate"
            else str(rng.choice(["node", "*"])) if rng.random() < 0.5 else None,
            "node": str(rng.choice(NODES)) if rng.random() < 0.3 else None,
            # one cpu (of one node: a single series, head.py's short path) or all of them
            "labels": {"cpu": str(rng.choice(CPUS))} if agg != "rate" and rng.random() < 0.4
            else None}


def assert_same(store: Store, rng: np.random.Generator, lo: int, hi: int, n: int) -> int:
    """`n` random queries through the head and through DuckDB alone; returns how many the head
    answered."""
    head = store.head
    assert head is not None
    served = 0
    for _ in range(n):
        q = random_query(rng, lo, hi)
        hits = head.hits
        got = store.query(**q)
        served += head.hits - hits
        store.head = None
        try:
            want = store.query(**q)
        finally:
            store.head = head
        assert [(r["ts_ms"], r["node"], r["labels"]) for r in got] == \
            [(r["ts_ms"], r["node"], r["labels"]) for r in want], q
        for g, w in zip(got, want, strict=True):
            exact = q["agg"] in ("min", "max", "count", "last")
            assert g["value"] == (w["value"] if exact else pytest.approx(w["value"], rel=1e-12)), q
    return served


def test_head_equals_duckdb_over_packed_late_and_dirty_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    clock = {"ms": T0 + 3 * HOUR}  # hours 0-1 settle, hour 2 stays raw
    cfg = StorageConfig(rollup_interval_ms=10**9, maintenance_interval_secs=10**9)
    path = tmp_path / "h.duckdb"
    store = Store(path, cfg, clock_ms=lambda: clock["ms"])
    try:
        first = batches(rng, T0, T0 + 3 * HOUR, 20_000, 1)
        for i in range(0, len(first), 90):
            store.write(first[i:i + 90])
        store.roll_up(budget_s=60, include_open=True)
        store.maintain(budget_s=60)  # hours 0-1: materialised to 1h and packed
        assert store.pack_raw(budget_s=60, until_ms=T0 + 2 * HOUR) >= 0
        rows = store.stats()["rows"]
        assert rows["packed_points"] > 0 and rows["rollup_1h"] > 0
        assert store.query("cpu_percent", since_ms=T0, until_ms=T0 + HOUR, step_ms=MIN)
        head = store.head
        assert head is not None and head.start is not None and head.loads == 1
        # after the load: new minutes, late points into a packed hour (late_points, partial
        # rows) and into rolled minutes (dirty again), some of them left dirty
        store.write(batches(rng, T0 + 3 * HOUR, T0 + 4 * HOUR, 20_000, 10_000))
        store.write(batches(rng, T0 + 30 * MIN + 3_001, T0 + 50 * MIN, 60_000, 20_000))
        store.write(batches(rng, T0 + 150 * MIN + 5_003, T0 + 170 * MIN, 60_000, 30_000))
        store.roll_up(budget_s=60)
        store.write(batches(rng, T0 + 171 * MIN + 9_011, T0 + 175 * MIN, 30_000, 40_000))
        assert store.stats()["rows"]["dirty_minutes"] > 0
        assert store.stats()["rows"]["late_points"] > 0
        assert assert_same(store, rng, T0, T0 + 4 * HOUR, 120) > 60
    finally:
        store.close()
    store = Store(path, cfg, clock_ms=lambda: clock["ms"])  # a head loaded from the file alone
    try:
        assert assert_same(store, rng, T0, T0 + 4 * HOUR, 80) > 40
        assert store.head is not None and store.head.loads == 1
    finally:
        store.close()


def one_mib_head_store(path: Path, rng: np.random.Generator, until_ms: int) -> Store:
    """A store with a 1 MiB query head (21 minutes at 1024 series: 1012 `pad` series beside
    the 12), its clock at T0 + 4 h, holding 30 s points of every series from T0 to `until_ms`,
    rolled up."""
    store = Store(path, StorageConfig(
        rollup_interval_ms=10**9, maintenance_interval_secs=10**9, query_head_mib=1),
        clock_ms=lambda: T0 + 4 * HOUR)
    pad = [Sample("pad", canonical_labels({"i": str(i)}), 0.0, T0) for i in range(1012)]
    store.write([IncomingBatch("p", 1, 1, MetricsBatch.from_samples(pad), T0)])
    store.write(batches(rng, T0, until_ms, 30_000, 1))
    store.roll_up(budget_s=60, include_open=True)
    return store


def test_small_head_keeps_newest_minutes_and_leaves_older_ranges_to_duckdb(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    store = one_mib_head_store(tmp_path / "s.duckdb", rng, T0 + 2 * HOUR)
    try:
        head = store.head
        assert head is not None
        # A range older than the newest 21 minutes it could hold does not load it...
        assert store.query("cpu_percent", since_ms=T0 + HOUR, step_ms=MIN)
        assert head.start is None and head.loads == 0
        # ...a recent one does.
        assert store.query("cpu_percent", since_ms=T0 + 110 * MIN, step_ms=MIN)
        assert head.start is not None and head.loads == 1
        assert T0 < head.start < T0 + 2 * HOUR  # 1 MiB at 1024 series: 21 minutes
        assert head.nbytes() <= 1 << 20
        store.write(batches(rng, T0 + 2 * HOUR, T0 + 150 * MIN, 30_000, 5_000))
        assert head.nbytes() <= 1 << 20
        assert head.start > T0 + 2 * HOUR
        assert assert_same(store, rng, T0, T0 + 150 * MIN, 60) > 0
    finally:
        store.close()


def test_more_series_than_its_capacity_keeps_fewer_minutes_and_the_same_answers(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    store = one_mib_head_store(tmp_path / "g.duckdb", rng, T0 + 20 * MIN)
    try:
        head = store.head
        assert head is not None and store.query("cpu_percent", since_ms=T0, step_ms=MIN)
        assert head.start == 0  # loaded: all 20 minutes fit 1 MiB at 1024 series (21)
        wide = [Sample("wide", canonical_labels({"i": str(i)}), float(i), T0 + 20 * MIN + i)
                for i in range(1000)]  # ids past 1024 (under 2048): capacity 2048, 10 minutes fit
        store.write([IncomingBatch("d", 1, 1, MetricsBatch.from_samples(wide), T0 + 20 * MIN)])
        store.write(batches(rng, T0 + 20 * MIN, T0 + 25 * MIN, 30_000, 1_000))
        assert head.nbytes() <= 1 << 20
        assert head._ring.nbytes <= (1 << 20) + 6 * 8 * 2048  # noqa: SLF001 - one free slot
        assert T0 + 14 * MIN < head.start <= T0 + 16 * MIN
        assert assert_same(store, rng, T0 + 16 * MIN, T0 + 30 * MIN, 80) > 0
        got = store.query("wide", since_ms=T0 + 20 * MIN, step_ms=MIN, agg="sum", group_by="*")
        assert [r["value"] for r in got] == [sum(range(1000))]
    finally:
        store.close()


def test_query_head_mib_is_checked() -> None:
    assert StorageConfig(query_head_mib=-1).validate() == [
        "storage.query_head_mib: must be >= 0 (0 = off) (got -1)"]


def test_query_body_is_json_with_iso_times_and_nan_as_null() -> None:
    from legion.aggregator.gateway.api import query_body
    from legion.aggregator.gateway.timefmt import iso_ms

    rows = [{"ts_ms": T0 + i // 2 * MIN, "node": "a", "metric": "m", "labels": {"cpu": "0"},
             "value": float("nan") if i == 3 else i / 3} for i in range(6)]
    got = json.loads(query_body(rows))
    assert [r["ts"] for r in got] == [iso_ms(T0 + i // 2 * MIN) for i in range(6)]
    assert [r["value"] for r in got] == [i / 3 if i != 3 else None for i in range(6)]
    assert got[0] == {"ts_ms": T0, "node": "a", "metric": "m", "labels": {"cpu": "0"},
                      "value": 0.0, "ts": "2023-11-15T00:00:00.000Z"}


@pytest.mark.parametrize("agg", ("avg", "min", "max", "sum", "count", "last"))
def test_one_series_and_fleet_folds_equal_the_general_fold(agg: str) -> None:
    """The plain-Python fold of one series and the fold of "*" (head.py) give what the
    general fold gives, bucket for bucket, with empty minutes, NaN values and tied last_ts."""
    from legion.aggregator.store.head import _combine, _one_series
    from legion.aggregator.store.query import SeriesRow

    rng = np.random.default_rng(3)
    minutes = [T0 + i * MIN for i in range(37)]
    arr = np.empty((37, 4, 6))
    arr[..., 0] = rng.normal(size=(37, 4))  # min
    arr[..., 1] = arr[..., 0] + 1  # max
    arr[..., 2] = rng.normal(size=(37, 4)) * 10  # sum
    arr[..., 3] = rng.integers(1, 5, size=(37, 4))  # count
    arr[..., 4] = T0 + rng.integers(0, 3, size=(37, 4)) * 1000.0  # last_ts: often tied
    arr[..., 5] = rng.normal(size=(37, 4))  # last
    arr[5:9, 0] = [np.inf, -np.inf, 0.0, 0.0, -np.inf, np.nan]  # empty minutes
    arr[11, 0, [0, 5]] = np.nan
    arr[20, 1, 1] = np.nan
    arr[12:14, 0, 4] = T0 + 5000.0  # the newest of their bucket, tied: the larger last wins
    arr[12:14, 0, 5] = [np.nan, 0.5]
    sel = [SeriesRow(i, "n", "m", {"k": str(i)}) for i in range(4)]
    for step in (MIN, 5 * MIN, 7 * MIN, HOUR):
        want = _combine(arr[:, :1].copy(), minutes, step, agg, sel[:1], None)
        got = _one_series(arr[:, 0].tolist(), minutes, step, agg, "0")
        assert len(got) == len(want) > 0
        assert [(k, b) for k, b, _ in got] == [(k, b) for k, b, _ in want]
        if agg in ("avg", "sum"):  # NumPy adds 8 or more values pairwise: the last bits differ
            np.testing.assert_allclose([v for *_, v in got], [v for *_, v in want], rtol=1e-12)
        else:
            np.testing.assert_array_equal([v for *_, v in got], [v for *_, v in want])
        # "*" folds the series of each minute first: float sums may differ in the last bits
        whole = _combine(arr.copy(), minutes, step, agg, sel, "*")
        general = _combine(arr.copy(), minutes, step, agg, sel, "node")  # one node: one group
        assert [(b, "*") for _, b, _ in general] == [(b, k) for k, b, _ in whole]
        np.testing.assert_allclose([v for *_, v in whole], [v for *_, v in general],
                                   rtol=1e-12)
