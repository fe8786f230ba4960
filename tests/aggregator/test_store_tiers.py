"""Storage tiers: rollups vs recomputation (late data included), planning, retention, cap."""

from __future__ import annotations

import numpy as np
import pytest

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store
from legion.kernel.errors import StoreError
from legion.proto import MetricsBatch, Sample, canonical_labels

T0 = 1_700_006_400_000  # a UTC midnight
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def make_batches(rng: np.random.Generator, n: int, span_ms: int, nodes=("a", "b"),
                 cpus=("0", "1", "2")) -> tuple[list[IncomingBatch], list[tuple]]:
    """Random batches (out of order in time); returns them and the truth rows."""
    batches, truth = [], []
    for seq in range(1, n + 1):
        node = nodes[seq % len(nodes)]
        ts = T0 + int(rng.integers(0, span_ms)) // 1000 * 1000 + seq % 1000  # unique per node
        samples = []
        for c in cpus:
            if rng.random() < 0.85:
                v = round(float(rng.normal(50, 25)), 1)
                samples.append(Sample("cpu_percent", canonical_labels({"cpu": c}), v, ts))
                truth.append((node, c, ts, v))
        batches.append(IncomingBatch(node, 1, seq, MetricsBatch.from_samples(samples), ts))
    return batches, truth


def expected(truth, width, agg, lo=None, hi=None, key=lambda r: (r[0], r[1])):
    """numpy recomputation: {(group, bucket): value}."""
    groups: dict = {}
    for r in truth:
        if (lo is None or r[2] >= lo) and (hi is None or r[2] < hi):
            groups.setdefault((key(r), r[2] // width * width), []).append((r[2], r[3]))
    out = {}
    for k, tv in groups.items():
        v = np.array([x[1] for x in tv])
        out[k] = {"avg": v.mean(), "min": v.min(), "max": v.max(), "sum": v.sum(),
                  "count": len(v), "last": max(tv)[1]}[agg]
    return out


def got_by_series(rows):
    return {((r["node"], r["labels"]["cpu"]), r["ts_ms"]): r["value"] for r in rows}


def assert_close(got, want):
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k


def test_rollups_equal_recomputation_with_late_and_resent(tmp_path):
    rng = np.random.default_rng(7)
    store = Store(tmp_path / "r.duckdb", clock_ms=lambda: T0 + 3 * DAY + HOUR)
    try:
        batches, truth = make_batches(rng, 600, 2 * DAY + 5 * HOUR)
        for i in range(0, len(batches), 50):
            store.write(batches[i:i + 50] + batches[max(0, i - 20):i])  # resends: duplicates
            if i % 150 == 0:
                store.roll_up(budget_s=30)  # passes between late arrivals
        store.roll_up(budget_s=30, include_open=True)
        assert store.stats()["rows"]["dirty_minutes"] == 0
        for step, tier in ((MIN, "1m"), (HOUR, "1h"), (DAY, "1d"), (2 * HOUR, "1h")):
            assert store.plan(step, "avg") == tier
            for agg in ("avg", "min", "max", "sum", "count", "last"):
                got = got_by_series(store.query("cpu_percent", step_ms=step, agg=agg))
                assert_close(got, expected(truth, step, agg))
        # Materialise the settled hours and days (maintenance does it): same answers from 1h/1d
        assert store.maintain(budget_s=60)["materialised"] > 0
        for step in (HOUR, DAY):
            for agg in ("avg", "min", "max", "sum", "count", "last"):
                got = got_by_series(store.query("cpu_percent", step_ms=step, agg=agg))
                assert_close(got, expected(truth, step, agg))
        # nothing reached the tiers twice: every tier counts exactly the raw points
        with store._cursor() as cur:
            for tier in ("1m", "1h", "1d"):
                assert cur.execute(f"SELECT sum(count) FROM rollup_{tier}").fetchall()[0][0] \
                    == len(truth)
    finally:
        store.close()


def test_tier_query_includes_minutes_not_yet_rolled_up(tmp_path):
    rng = np.random.default_rng(3)
    store = Store(tmp_path / "d.duckdb", StorageConfig(rollup_interval_ms=10**9))
    try:
        batches, truth = make_batches(rng, 300, 3 * HOUR)
        store.write(batches[:200])
        store.roll_up(budget_s=30, include_open=True)
        store.write(batches[200:])  # late points land in hours that are already rolled up
        assert store.stats()["rows"]["dirty_minutes"] > 0
        for step in (MIN, HOUR, DAY):
            for agg in ("avg", "max", "count", "last"):
                got = got_by_series(store.query("cpu_percent", step_ms=step, agg=agg))
                assert_close(got, expected(truth, step, agg))
    finally:
        store.close()


def test_plan_chooses_coarsest_exact_tier(tmp_path):
    store = Store(tmp_path / "p.duckdb")
    try:
        assert store.plan(DAY) == "1d"
        assert store.plan(7 * DAY, "max") == "1d"
        assert store.plan(6 * HOUR) == "1h"
        assert store.plan(5 * MIN) == "1m"
        assert store.plan(30_000) == "raw"
        assert store.plan(90_000) == "raw"
        assert store.plan(HOUR, "p95") == "raw"
        assert store.plan(None, "avg", T0, T0 + DAY) == "1d"
        assert store.plan(None, "avg", T0 + MIN, T0 + DAY) == "1m"
        assert store.plan(None, "avg", T0 + 1, T0 + DAY) == "raw"
    finally:
        store.close()
    off = Store(tmp_path / "off.duckdb", StorageConfig(rollups_enabled=False))
    try:
        assert off.plan(DAY) == "raw"
    finally:
        off.close()


def test_group_by_and_topk(tmp_path):
    rng = np.random.default_rng(11)
    store = Store(tmp_path / "g.duckdb")
    try:
        batches, truth = make_batches(rng, 200, 2 * HOUR, nodes=("a", "b", "c"))
        store.write(batches)
        store.roll_up(budget_s=30)
        for group_by, key in (("cpu", lambda r: r[1]), ("node", lambda r: r[0])):
            rows = store.query("cpu_percent", step_ms=HOUR, agg="avg", group_by=group_by)
            got = {((r["labels"][group_by] if group_by != "node" else r["node"]), r["ts_ms"]):
                   r["value"] for r in rows}
            assert_close(got, expected(truth, HOUR, "avg", key=key))
        top = store.topk("cpu_percent", k=3, agg="max", since_ms=T0, until_ms=T0 + 2 * HOUR)
        want = expected(truth, 10 * DAY, "max")
        best = sorted(want.items(), key=lambda kv: -kv[1])[:3]
        assert [((r["node"], r["labels"]["cpu"]), r["value"]) for r in top] == [
            (k[0], v) for k, v in best]
        low = store.topk("cpu_percent", k=1, agg="avg", bottom=True)
        assert len(low) == 1
    finally:
        store.close()


def test_retention_per_tier_and_late_points_beyond_raw(tmp_path):
    now = [T0 + 3 * DAY]
    cfg = StorageConfig(raw_retention_hours=24, rollup_1m_retention_days=2,
                        rollup_1h_retention_days=2.5, maintenance_budget_ms=10_000)
    store = Store(tmp_path / "ret.duckdb", cfg, clock_ms=lambda: now[0])
    rng = np.random.default_rng(5)
    try:
        batches, truth = make_batches(rng, 500, 3 * DAY)
        store.write(batches)
        store.maintain()
        kept = store.stats()["kept_since_ms"]
        assert kept["raw"] == T0 + 2 * DAY and kept["1m"] == T0 + DAY
        assert kept["1h"] == T0 + DAY // 2 and kept["1d"] == 0
        raw = store.query("cpu_percent", since_ms=T0 + 2 * DAY)
        assert len(raw) == sum(1 for r in truth if r[2] >= T0 + 2 * DAY)
        with pytest.raises(StoreError, match="raw points are kept only since"):
            store.query("cpu_percent", since_ms=T0)
        with pytest.raises(StoreError, match="1m tier keeps data only since"):
            store.query("cpu_percent", since_ms=T0, step_ms=5 * MIN)
        assert_close(got_by_series(store.query("cpu_percent", step_ms=DAY, agg="sum")),
                     expected(truth, DAY, "sum"))
        hourly = store.query("cpu_percent", step_ms=HOUR, agg="max", since_ms=T0 + DAY)
        assert_close(got_by_series(hourly), expected(truth, HOUR, "max", lo=T0 + DAY))
        # a late batch for a day whose raw is gone: merged into the tiers, exactly once
        late_ts = T0 + DAY + 3 * HOUR + 17_000
        late = IncomingBatch("a", 1, 10_000, MetricsBatch.from_samples(
            [Sample("cpu_percent", canonical_labels({"cpu": "0"}), 99.5, late_ts)]), now[0])
        store.write([late])
        store.write([late])
        truth.append(("a", "0", late_ts, 99.5))
        store.roll_up(budget_s=30)
        for step in (MIN, HOUR, DAY):
            for agg in ("max", "count", "sum"):
                got = got_by_series(store.query("cpu_percent", step_ms=step, agg=agg,
                                                since_ms=T0 + DAY if step < DAY else None))
                want = expected(truth, step, agg, lo=T0 + DAY if step < DAY else None)
                assert_close(got, want)
    finally:
        store.close()


def test_disk_cap_deletes_oldest_raw_first(tmp_path):
    """Space comes back per whole row group (measured): the cap deletes raw chunks until it does.
    Raw kept as rows (compress_raw off); the packed form has its own test in test_store_packing."""
    path = tmp_path / "cap.duckdb"
    store = Store(path, StorageConfig(raw_retention_hours=500, maintenance_budget_ms=20_000,
                                      compress_raw=False),
                  clock_ms=lambda: T0 + DAY)
    rng = np.random.default_rng(1)
    try:
        width = 500
        names = tuple(["m_percent"])
        labels = tuple(canonical_labels({"i": str(i)}) for i in range(width))
        for seq in range(1, 601):  # 300k points over 20 minutes
            ts = T0 + seq * 2_000
            mb = MetricsBatch(names, labels, np.zeros(width, np.uint32),
                              np.arange(width, dtype=np.uint32),
                              rng.normal(50, 20, width).round(3),
                              np.full(width, ts, np.int64))
            store.write([IncomingBatch("a", 1, seq, mb, ts)])
        store.roll_up(budget_s=60, include_open=True)
        store.checkpoint()
        from legion.aggregator.store.retention import used_bytes
        full = used_bytes(store._con, path)
        cap = full - 2 * 262_144
        store.config = StorageConfig(raw_retention_hours=500, max_disk_bytes=cap,
                                     maintenance_budget_ms=20_000, compress_raw=False)
        report = store.maintain()
        assert report["over_cap"] and report["deleted"].get("raw", 0) > 0
        assert used_bytes(store._con, path) <= cap
        kept = store.stats()["kept_since_ms"]["raw"]
        rows = store.query("m_percent", labels={"i": "7"})
        assert rows and min(r["ts_ms"] for r in rows) >= kept > T0  # the oldest raw went
        daily = store.query("m_percent", labels={"i": "7"}, step_ms=DAY, agg="count")
        assert sum(r["value"] for r in daily) == 600  # rollups untouched by the cap
    finally:
        store.close()


def test_bad_storage_config_is_reported_with_key_paths():
    """The section checks itself (the store is handed it checked, at config load)."""
    from legion.cli.config import config_from_dict
    from legion.kernel.errors import ConfigError

    problems = StorageConfig(max_disk_bytes=-1, raw_retention_hours=24 * 90).validate()
    text = "\n".join(problems)
    assert "storage.max_disk_bytes" in text and "must not shrink" in text
    assert not StorageConfig().validate()
    with pytest.raises(ConfigError) as err:
        config_from_dict({"storage": {"max_disk_bytes": -1, "raw_retention_hours": 24 * 90}})
    assert err.value.problems == problems


def one_row_per_bucket(store, tier: str, before: int) -> bool:
    with store._cursor() as cur:
        return cur.execute(f"SELECT count(*) FROM (SELECT series_id, bucket FROM rollup_{tier} "
                           f"WHERE bucket < {before} GROUP BY ALL HAVING count(*) > 1)"
                           ).fetchall()[0][0] == 0


@pytest.mark.parametrize("packed", [False, True])
def test_materialised_hours_and_days_stay_exact_with_late_points(tmp_path, packed):
    """Late points re-roll their minutes and rebuild materialised hours and days in place; with
    raw packed they take the late path instead (partial rows in every covering tier)."""
    rng = np.random.default_rng(21)
    cfg = StorageConfig(raw_retention_hours=24 * 20, maintenance_budget_ms=30_000,
                        compress_raw=packed)
    store = Store(tmp_path / "c.duckdb", cfg, clock_ms=lambda: T0 + 3 * DAY)
    try:
        batches, truth = make_batches(rng, 400, 6 * HOUR)
        store.write(batches[:300])
        store.roll_up(budget_s=30, include_open=True)
        report = store.maintain()
        kept = store.stats()["kept_since_ms"]
        assert report["materialised"] == 6 + 1  # six hours, then their day
        assert kept["hours_done"] == T0 + 6 * HOUR and kept["days_done"] == T0 + DAY
        assert one_row_per_bucket(store, "1h", T0 + DAY)  # one row per (series, hour)
        store.write(batches[300:])  # late points into materialised hours
        store.roll_up(budget_s=30)
        for step in (MIN, HOUR, DAY):
            for agg in ("avg", "min", "last", "count"):
                assert_close(got_by_series(store.query("cpu_percent", step_ms=step, agg=agg)),
                             expected(truth, step, agg))
        if packed:
            assert store.stats()["rows"]["late_points"] == sum(len(b.batch) for b in batches[300:])
        else:  # late minutes rebuilt their hours and day in place: still one row per bucket
            assert one_row_per_bucket(store, "1h", T0 + DAY)
            assert one_row_per_bucket(store, "1d", T0 + 2 * DAY)
    finally:
        store.close()


def test_materialising_one_bucket_per_round_is_exact_at_every_step(tmp_path):
    """With a budget that fits nothing, each round materialises one bucket; hours and days not
    materialised yet are read from the finer tier, so every intermediate state reads the same."""
    rng = np.random.default_rng(22)
    cfg = StorageConfig(raw_retention_hours=24 * 20)
    store = Store(tmp_path / "t.duckdb", cfg, clock_ms=lambda: T0 + 3 * DAY)
    try:
        batches, truth = make_batches(rng, 300, 4 * HOUR)
        store.write(batches)
        store.roll_up(budget_s=30, include_open=True)
        marks = []
        for _ in range(6):
            store.maintain(budget_s=0)
            kept = store.stats()["kept_since_ms"]
            marks.append((kept.get("hours_done", 0), kept.get("days_done", 0)))
            for step in (HOUR, DAY):  # exact at every intermediate state
                for agg in ("sum", "last"):
                    assert_close(got_by_series(store.query("cpu_percent", step_ms=step,
                                                           agg=agg)),
                                 expected(truth, step, agg))
        assert marks == [(T0 + h * HOUR, 0) for h in range(1, 5)] + [(T0 + 4 * HOUR, T0 + DAY)] * 2
    finally:
        store.close()


def test_raw_expires_in_quarter_hour_steps_so_rounds_between_touch_no_horizon(tmp_path):
    """The raw horizon moves by whole `HORIZON_STEP_MS` (15 min), not every minute: three
    horizons over 40 minutes of rounds, and what lies between the step and the exact retention
    is still served."""
    now = [T0 + 2 * HOUR]
    store = Store(tmp_path / "q.duckdb", StorageConfig(raw_retention_hours=1,
                                                       maintenance_budget_ms=10_000),
                  clock_ms=lambda: now[0])
    try:
        samples = [Sample("cpu_percent", canonical_labels({"cpu": "0"}), float(m), T0 + m * MIN)
                   for m in range(120)]
        store.write([IncomingBatch("a", 1, 1, MetricsBatch.from_samples(samples), T0)])
        store.roll_up(budget_s=30, include_open=True)
        horizons = []
        for k in range(40):
            now[0] = T0 + 2 * HOUR + k * MIN
            store.maintain()
            kept = store.stats()["kept_since_ms"]["raw"]
            horizons.append(kept)
            served = [r["ts_ms"] for r in store.query("cpu_percent", since_ms=kept)]
            assert served == [T0 + m * MIN for m in range(120) if T0 + m * MIN >= kept]
        assert sorted(set(horizons)) == [T0 + HOUR, T0 + 75 * MIN, T0 + 90 * MIN]
        assert horizons.index(T0 + 75 * MIN) == 15 and horizons.index(T0 + 90 * MIN) == 30
    finally:
        store.close()


def test_retention_with_no_budget_still_progresses_one_small_step_per_round(tmp_path):
    rng = np.random.default_rng(23)
    store = Store(tmp_path / "p.duckdb", StorageConfig(raw_retention_hours=24 * 20,
                                                       rollups_enabled=False),
                  clock_ms=lambda: T0 + 3 * DAY)
    try:
        batches, truth = make_batches(rng, 200, 2 * HOUR)
        store.write(batches)
        store.config = StorageConfig(raw_retention_hours=3 * 24 - 1, rollups_enabled=False)
        reports = [store.maintain(budget_s=0) for _ in range(3)]
        assert [r["steps"] for r in reports] == [1, 1, 1]  # one smallest (1 min) step each
        kept = store.stats()["kept_since_ms"]["raw"]
        oldest = min(r[2] for r in truth) // MIN * MIN
        assert kept == oldest + 3 * MIN
        rows = store.query("cpu_percent")
        assert sorted(r["ts_ms"] for r in rows) == sorted(r[2] for r in truth if r[2] >= kept)
        for _ in range(200):  # budget back: bigger steps, measured, finish the job
            store.config = StorageConfig(raw_retention_hours=3 * 24 - 1, rollups_enabled=False,
                                         maintenance_budget_ms=5_000)
            if not store.maintain()["deleted"].get("raw"):
                break
        assert store.stats()["kept_since_ms"]["raw"] == T0 + HOUR
        assert sorted(r["ts_ms"] for r in store.query("cpu_percent")) == sorted(
            r[2] for r in truth if r[2] >= T0 + HOUR)
    finally:
        store.close()
