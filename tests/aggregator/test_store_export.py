"""Parquet export and archive-before-delete: hive-partitioned by date, exact round trip."""

from __future__ import annotations

import duckdb
import numpy as np

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store, export_parquet
from legion.proto import MetricsBatch, Sample, canonical_labels

T0 = 1_700_006_400_000  # a UTC midnight (2023-11-15)
HOUR, DAY = 3_600_000, 86_400_000


def fill(store: Store, n: int = 120, span_ms: int = 2 * DAY) -> None:
    rng = np.random.default_rng(2)
    batches = []
    for seq in range(1, n + 1):
        ts = T0 + seq * (span_ms // n)
        samples = [Sample("cpu_percent", canonical_labels({"cpu": str(c)}),
                          float(rng.normal(50, 20)), ts) for c in range(3)]
        samples.append(Sample("mem_bytes", (), float(rng.integers(0, 2**40)), ts))
        batches.append(IncomingBatch("h1" if seq % 2 else "h2", 1, seq,
                                     MetricsBatch.from_samples(samples), ts))
    store.write(batches)


def read_back(out) -> list[tuple]:
    return duckdb.sql(
        f"SELECT date::VARCHAR, ts_ms, node, metric, labels, value "
        f"FROM read_parquet('{out}/**/*.parquet', hive_partitioning = true) "
        "ORDER BY node, metric, labels::VARCHAR, ts_ms").fetchall()


def test_export_round_trips_exactly(tmp_path):
    store = Store(tmp_path / "e.duckdb")
    try:
        fill(store)
        calls: list[tuple[int, int]] = []
        out = tmp_path / "out"
        since, until = T0 + 5 * HOUR, T0 + DAY + 7 * HOUR
        res = export_parquet(store, since, until, out_dir=out,
                             progress=lambda d, t: calls.append((d, t)))
        hours = (until - since) // HOUR  # one progress step and at most one file per hour
        assert calls == [(i, hours) for i in range(1, hours + 1)] and res["days"] == 2
        with_data = {ts // HOUR for ts in (T0 + seq * (2 * DAY // 120) for seq in range(1, 121))
                     if since <= ts < until}
        assert res["files"] == len(with_data) == len(list(out.glob("date=*/*.parquet")))
        dirs = sorted(p.name for p in out.iterdir())
        assert dirs == ["date=2023-11-15", "date=2023-11-16"]
        rows = read_back(out)
        want = []
        for metric in ("cpu_percent", "mem_bytes"):
            for r in store.query(metric, since_ms=since, until_ms=until):
                want.append((r["node"], metric, r["labels"], r["ts_ms"], r["value"]))
        assert len(rows) == res["rows"] == len(want)
        def canon(node, metric, labels, ts, value):
            return (node, metric, tuple(sorted(dict(labels).items())), ts, value)

        got = sorted(canon(r[2], r[3], r[4], r[1], r[5]) for r in rows)
        assert got == sorted(canon(*w) for w in want)  # exact: floats compared bit for bit
        for r in rows:  # the partition is the UTC date of the point
            assert r[0] == np.datetime64(r[1], "ms").astype("datetime64[D]").astype(str)
        only = export_parquet(store, since, until, metric="mem_bytes", out_dir=tmp_path / "m")
        assert only["rows"] == sum(1 for w in want if w[1] == "mem_bytes")
        import pandas as pd  # readable by pandas too

        df = pd.read_parquet(tmp_path / "m")
        assert len(df) == only["rows"] and set(df["metric"]) == {"mem_bytes"}
    finally:
        store.close()


def test_archive_before_retention_deletes(tmp_path):
    cfg = StorageConfig(raw_retention_hours=12, archive_enabled=True, archive_dir="arch",
                        maintenance_budget_ms=30_000).resolved(tmp_path)
    store = Store(tmp_path / "a.duckdb", cfg, clock_ms=lambda: T0 + 2 * DAY)
    try:
        fill(store)
        before = {(r["node"], r["ts_ms"], r["value"]) for r in store.query("mem_bytes")}
        report = store.maintain()
        kept = store.stats()["kept_since_ms"]
        assert kept["raw"] == T0 + DAY + 12 * HOUR and report["archived_points"] > 0
        after = {(r["node"], r["ts_ms"], r["value"])
                 for r in store.query("mem_bytes", since_ms=kept["raw"])}
        archived = {(r[2], r[1], r[5]) for r in read_back(tmp_path / "arch") if r[3] == "mem_bytes"}
        assert archived | after == before and not archived & after
    finally:
        store.close()


def test_export_work_follows_the_data_not_the_range(tmp_path):
    """Issue 13: `export --since 3650d` ran one query per hour of the range (87,600)."""
    store = Store(tmp_path / "w.duckdb", clock_ms=lambda: T0 + 3 * DAY)
    try:
        fill(store)
        store.pack_raw(until_ms=T0 + DAY)  # the first day packed into chunks, the rest raw
        calls: list[tuple[int, int]] = []
        res = export_parquet(store, T0 + 3 * DAY - 3650 * DAY, T0 + 3 * DAY,
                             out_dir=tmp_path / "out", progress=lambda d, t: calls.append((d, t)))
        hours_with_data = {(T0 + seq * (2 * DAY // 120)) // HOUR for seq in range(1, 121)}
        assert res["files"] == len(hours_with_data)
        assert res["rows"] == 120 * 4
        assert calls and calls[-1][1] <= len(hours_with_data) + 24  # not 87,600 steps
    finally:
        store.close()
