"""Raw points packed into compressed per-series chunks (schema v2): exact codec, queries equal
before and after packing, late points, retention, archive, reopen, cap, migration from v1."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store, chunk_rows, chunkcodec, packing
from legion.aggregator.store.chunk_tables import ChunkTable, chunk_tables, small_table_bytes
from legion.aggregator.store.packing import ALL_SERIES, PACK_MIN_SERIES
from legion.aggregator.store.retention import used_bytes
from legion.aggregator.store.schema import NEW_FILE_BLOCK_SIZE, SCHEMA_VERSION
from legion.kernel.errors import StoreError
from legion.proto import MetricsBatch, canonical_labels
from tests.aggregator.old_store_files import old_store_file
from tests.aggregator.test_store_tiers import assert_close

T0 = 1_700_006_400_000  # a UTC midnight
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


# ---- the codec ---------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.floats(allow_nan=True, allow_infinity=True,
                                                          width=64)), min_size=1, max_size=300),
       st.integers(-(2**40), 2**42))
def test_codec_round_trips_bit_for_bit(pairs, t0):
    ts = t0 + np.cumsum([p[0] for p in pairs]).astype(np.int64)  # sorted, repeats allowed
    values = np.array([p[1] for p in pairs], np.float64)
    blob = chunkcodec.encode(ts, values)
    got_ts, got_v = chunkcodec.decode(blob, int(ts[0]), len(ts))
    assert np.array_equal(got_ts, ts)
    assert np.array_equal(got_v.view(np.uint64), values.view(np.uint64))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 200), st.sampled_from([0, 1, 2, 7]),
                          st.sampled_from([1, 1000, 15_000])), min_size=1, max_size=12),
       st.integers(0, 2**32))
def test_encoding_runs_together_equals_encoding_each_alone(runs, seed):
    """encode_many vectorises over runs of different kinds: each blob must be what encode gives
    for that run alone (decimal, XOR and special values side by side)."""
    rng = np.random.default_rng(seed)
    ts_parts, v_parts = [], []
    for n, kind, step in runs:
        ts_parts.append(np.sort(T0 + np.arange(n) * step + rng.integers(0, 3, n)))
        v = {0: np.round(rng.normal(50, 10, n), 1), 1: rng.normal(size=n),
             2: rng.choice([0.0, -0.0, np.inf, np.nan, 2.5], n),
             7: rng.integers(0, 10**6, n).astype(float)}[kind]
        v_parts.append(v)
    starts = np.cumsum([0] + [len(t) for t in ts_parts[:-1]])
    blobs = chunkcodec.encode_many(np.concatenate(ts_parts), np.concatenate(v_parts), starts)
    assert blobs == [chunkcodec.encode(t, v) for t, v in zip(ts_parts, v_parts, strict=True)]
    for blob, t, v in zip(blobs, ts_parts, v_parts, strict=True):
        got_t, got_v = chunkcodec.decode(blob, int(t[0]), len(t))
        assert np.array_equal(got_t, t) and np.array_equal(got_v.view(np.uint64),
                                                           v.view(np.uint64))


@pytest.mark.parametrize("decimals", [1, 2, 3])
def test_codec_decimal_series_with_jitter_come_close_to_their_entropy(decimals):
    rng = np.random.default_rng(decimals)
    n = 3600  # an hour at 1 s, +-3 ms scheduler jitter
    ts = T0 + np.arange(n, dtype=np.int64) * 1000 + rng.integers(-3, 4, n)
    values = np.round(50 + np.cumsum(rng.normal(0, 0.3, n)), decimals)
    blob = chunkcodec.encode(ts, values)
    # What no lossless coder can beat: the entropy of a N(0, 0.3) step quantised to `decimals`
    # places, plus 7 equally likely jitter offsets. A row in DuckDB costs 5-7 bytes.
    floor = (0.5 * np.log2(2 * np.pi * np.e * 0.09) + decimals * np.log2(10) + np.log2(7)) / 8
    assert floor < len(blob) / n < floor + 0.5
    got_ts, got_v = chunkcodec.decode(blob, int(ts[0]), n)
    assert np.array_equal(got_ts, ts) and np.array_equal(got_v, values)


def test_codec_refuses_corrupt_blobs():
    blob = chunkcodec.encode(np.arange(10, dtype=np.int64), np.arange(10.0))
    for bad in (blob[:5], blob[:-3], b"\x07" + blob[1:]):
        with pytest.raises(StoreError, match="corrupt chunk"):
            chunkcodec.decode(bad, 0, 10)
    with pytest.raises(StoreError, match="corrupt chunk"):
        chunkcodec.decode(blob, 0, 11)  # the row says more points than the blob holds


def test_only_truly_identical_timestamps_are_shared():
    # Runs 0 and 1 collide on every fingerprint field (length, ends, both sums) but differ;
    # run 2 equals run 0; run 3 equals run 0 shifted by one hour (another chunk table).
    runs = [[0, 1, 4, 4, 6], [0, 2, 2, 5, 6], [0, 1, 4, 4, 6], [h + HOUR for h in (0, 1, 4, 4, 6)]]
    ts = np.array([T0 + t for r in runs for t in r], np.int64)
    starts = np.array([0, 5, 10, 15])
    owners = chunk_rows._timeline_owners(ts, starts, np.r_[starts[1:], 20])
    assert owners.tolist() == [-1, -1, 0, -1]


# ---- the store -------------------------------------------------------------------------------
def batches_for(rng, seqs, ts_list, nodes=("a", "b"), series=4):
    """One batch per (node, ts); values with one decimal, like the agent's percentages."""
    out, truth = [], []
    labels = tuple(canonical_labels({"cpu": str(c)}) for c in range(series))
    for seq, ts in zip(seqs, ts_list, strict=True):
        for node in nodes:
            vals = np.round(rng.normal(50, 20, series), 1)
            tss = np.full(series, ts, np.int64)
            out.append(IncomingBatch(node, 1, seq, MetricsBatch(
                ("cpu_percent",), labels, np.zeros(series, np.uint32),
                np.arange(series, dtype=np.uint32), vals, tss), ts))
            truth += [(node, str(c), int(ts), float(v)) for c, v in enumerate(vals)]
    return out, truth


def raw_rows(store, **kw):
    return sorted((r["node"], r["labels"]["cpu"], r["ts_ms"], r["value"])
                  for r in store.query("cpu_percent", **kw))


def stepped(store, step, agg):
    return {(r["node"], r["labels"]["cpu"], r["ts_ms"]): r["value"]
            for r in store.query("cpu_percent", step_ms=step, agg=agg)}


def recompute(truth, step, agg):
    groups: dict = {}
    for node, cpu, ts, v in truth:
        groups.setdefault((node, cpu, ts // step * step), []).append((ts, v))
    fn = {"avg": lambda tv: np.mean([v for _, v in tv]), "max": lambda tv: max(v for _, v in tv),
          "count": len, "last": lambda tv: max(tv)[1],
          "p95": lambda tv: float(np.quantile([v for _, v in tv], 0.95))}[agg]
    return {k: fn(tv) for k, tv in groups.items()}


def test_queries_are_identical_before_and_after_packing_and_late_points_land(tmp_path):
    rng = np.random.default_rng(5)
    now = {"ms": T0 + 6 * HOUR}
    store = Store(tmp_path / "p.duckdb", clock_ms=lambda: now["ms"])
    try:
        # 5 hours at 10 s with a few ms of jitter, written in time order, rolled up as it goes
        ts_list = [T0 + i * 10_000 + int(rng.integers(0, 5)) for i in range(5 * 360)]
        batches, truth = batches_for(rng, range(1, len(ts_list) + 1), ts_list)
        for i in range(0, len(batches), 120):
            store.write(batches[i:i + 120])
        store.roll_up(budget_s=30, include_open=True)
        before_raw = raw_rows(store)
        before = {(s, a): stepped(store, s, a) for s in (MIN, HOUR, 7 * MIN)
                  for a in ("avg", "max", "last", "p95")}
        assert before_raw == sorted(truth)

        report = store.maintain(budget_s=30)  # the clock says 6 h: hours 0-4 have settled
        assert report["packed_points"] == len(truth)
        rows = store.stats()["rows"]
        assert rows["points"] == 0 and rows["packed_points"] == len(truth)
        windows = 5 * HOUR // packing.WINDOW_MS
        assert rows["chunks"] == windows * 8  # one per series and window
        with store._cursor() as cur:  # both nodes' 4 series have the same ticks: 1 owner + 7
            shared = cur.execute(" UNION ALL ".join(
                f"SELECT count(ts_from) FROM {t.name}" for t in chunk_tables(cur))).fetchall()
        assert sum(r[0] for r in shared) == 7 * windows  # per window
        assert rows["chunk_bytes"] / len(truth) < 2.5  # vs 5-7 bytes per row
        assert raw_rows(store) == before_raw  # exact, floats bit for bit
        for (s, a), want in before.items():
            assert_close(stepped(store, s, a), want)  # 7 min and p95 read raw: decoded chunks
        assert raw_rows(store, since_ms=T0 + HOUR + 5, until_ms=T0 + 2 * HOUR + 7) == sorted(
            r for r in truth if T0 + HOUR + 5 <= r[2] < T0 + 2 * HOUR + 7)

        # Late points for a packed hour: stored, in every tier at once, never made dirty.
        late, late_truth = batches_for(rng, [5000, 5001], [T0 + 30 * MIN + 7, T0 + 3 * HOUR + 1])
        store.write(late)
        truth += late_truth
        rows = store.stats()["rows"]
        assert rows["dirty_minutes"] == 0 and rows["late_points"] == len(late_truth)
        assert raw_rows(store) == sorted(truth)
        for s, a in ((MIN, "avg"), (HOUR, "max"), (DAY, "count"), (7 * MIN, "p95")):
            assert_close(stepped(store, s, a), recompute(truth, s, a))
        # The next pack round takes the stragglers along; nothing changes for readers.
        now["ms"] = T0 + 7 * HOUR
        store.maintain(budget_s=30)
        rows = store.stats()["rows"]
        assert rows["points"] == rows["late_points"] == 0
        assert rows["packed_points"] == len(truth)
        assert raw_rows(store) == sorted(truth)
        assert_close(stepped(store, HOUR, "avg"), recompute(truth, HOUR, "avg"))
    finally:
        store.close()


def test_packing_in_small_steps_is_exact_at_every_intermediate_state(tmp_path):
    rng = np.random.default_rng(8)
    store = Store(tmp_path / "s.duckdb", StorageConfig(rollups_enabled=False),
                  clock_ms=lambda: T0 + 3 * HOUR)
    try:
        ts_list = [T0 + i * 30_000 for i in range(2 * 120)]
        nodes = tuple(f"n{i:03d}" for i in range(10))  # 40 series: three smallest steps
        batches, truth = batches_for(rng, range(1, len(ts_list) + 1), ts_list, nodes=nodes)
        store.write(batches)
        want = sorted(truth)
        rounds, states = 0, set()
        while (rows := store.stats()["rows"])["points"] or rows["late_points"]:
            store.maintain(budget_s=0)  # one smallest step (16 series) per round
            with store._cursor() as cur:
                states.add(cur.execute("SELECT max(kept_since_ms) FROM tier_state "
                                       "WHERE tier = 'pack_series'").fetchall()[0][0])
            if rounds == 0:
                # Mid-window late points: for series already packed (n000) and not yet (n009)
                late, late_truth = batches_for(rng, [900, 901], [T0 + 10 * MIN + 1] * 2,
                                               nodes=("n000", "n009"))
                store.write([late[0], late[3]])  # (900, n000) and (901, n009): 4 rows each
                want = sorted(truth + late_truth[0:4] + late_truth[12:16])
                assert store.stats()["rows"]["late_points"] == 8
            assert raw_rows(store) == want
            assert store.stats()["rows"]["raw_points"] == len(want)
            rounds += 1
            assert rounds < 200
        assert PACK_MIN_SERIES == 16
        # per window: 3 encoding steps (series ranges), then a deletion step per minute
        windows, minutes = 2 * HOUR // packing.WINDOW_MS, packing.WINDOW_MS // MIN
        assert rounds == windows * (3 + minutes) and states == {16, 32, ALL_SERIES, 0}
    finally:
        store.close()


def test_retention_and_archive_of_packed_points(tmp_path):
    rng = np.random.default_rng(9)
    clock = {"ms": T0 + 4 * HOUR}
    cfg = StorageConfig(raw_retention_hours=24, archive_enabled=True, archive_dir="arch",
                        maintenance_budget_ms=30_000).resolved(tmp_path)
    store = Store(tmp_path / "r.duckdb", cfg, clock_ms=lambda: clock["ms"])
    try:
        ts_list = [T0 + i * 60_000 for i in range(3 * 60)]
        batches, truth = batches_for(rng, range(1, len(ts_list) + 1), ts_list)
        store.write(batches)
        store.maintain()
        assert store.stats()["rows"]["points"] == 0
        clock["ms"] = T0 + DAY + 90 * MIN  # hour 0 has expired, hour 1 half
        report = store.maintain()
        kept = store.stats()["kept_since_ms"]["raw"]
        assert kept == T0 + 90 * MIN
        assert report["deleted"]["raw"] == sum(1 for r in truth if r[2] < T0 + HOUR)
        # A chunk goes when its newest point expires: hour 1 is still whole, readable from kept
        assert raw_rows(store, since_ms=kept) == sorted(r for r in truth if r[2] >= kept)
        archived = duckdb.sql(
            f"SELECT node, labels['cpu'], ts_ms, value FROM read_parquet("
            f"'{tmp_path}/arch/**/*.parquet', hive_partitioning = true)").fetchall()
        assert sorted(archived) == sorted(r for r in truth if r[2] < kept)  # exactly once
    finally:
        store.close()


def test_reopen_restores_late_horizon_and_latest_from_chunks(tmp_path):
    rng = np.random.default_rng(10)
    path = tmp_path / "o.duckdb"
    cfg = StorageConfig(rollups_enabled=False)
    store = Store(path, cfg, clock_ms=lambda: T0 + 3 * HOUR)
    ts_list = [T0 + i * 60_000 for i in range(120)]
    batches, truth = batches_for(rng, range(1, 121), ts_list)
    store.write(batches)
    store.maintain(budget_s=30)
    assert store.stats()["rows"]["points"] == 0
    store.close()
    store = Store(path, cfg, clock_ms=lambda: T0 + 3 * HOUR)
    try:
        newest = max(truth, key=lambda r: r[2])[2]
        latest = {(r["node"], r["labels"]["cpu"]): (r["ts_ms"], r["value"])
                  for r in store.latest("cpu_percent")}
        assert latest == {(n, c): (t, v) for n, c, t, v in truth if t == newest}
        late, late_truth = batches_for(rng, [500], [T0 + 10 * MIN + 3])
        store.write(late)  # goes to the late path: the horizon came back from the file
        assert store._writer.late_ms == T0 + 2 * HOUR
        assert raw_rows(store) == sorted(truth + late_truth)
    finally:
        store.close()


def test_disk_cap_deletes_oldest_packed_hours_first(tmp_path, monkeypatch):
    # hour tables, as for a large fleet
    monkeypatch.setattr("legion.aggregator.store.chunk_tables.SMALL_TABLE_BLOCKS", 0)
    rng = np.random.default_rng(11)
    path = tmp_path / "cap.duckdb"
    store = Store(path, StorageConfig(raw_retention_hours=500, maintenance_budget_ms=20_000),
                  clock_ms=lambda: T0 + DAY)
    try:
        nodes = tuple(f"n{i}" for i in range(50))
        ts_list = [T0 + i * 5_000 for i in range(6 * 720)]  # 6 hours, 200 series, 864k points
        batches, truth = batches_for(rng, range(1, len(ts_list) + 1), ts_list, nodes=nodes)
        for i in range(0, len(batches), 5000):
            store.write(batches[i:i + 5000])
        store.roll_up(budget_s=60, include_open=True)
        store.pack_raw(budget_s=60)
        store.checkpoint()
        assert store.stats()["rows"]["points"] == 0
        full = used_bytes(store._con, path)
        cap = full - 3 * 262_144
        store.config = StorageConfig(raw_retention_hours=500, max_disk_bytes=cap,
                                     maintenance_budget_ms=20_000)
        report = store.maintain()
        assert report["over_cap"] and report["deleted"].get("raw", 0) > 0
        # The round's later steps (1m compaction here) leave WAL that the next round's
        # checkpoint folds: the cap holds for what is checkpointed.
        store.checkpoint()
        assert used_bytes(store._con, path) <= cap
        kept = store.stats()["kept_since_ms"]["raw"]
        with store._cursor() as cur:  # whole packed hours went, oldest first
            assert chunk_tables(cur) == [ChunkTable(h, 1) for h in
                                         range(kept // HOUR, (T0 + 6 * HOUR) // HOUR)]
        assert kept >= T0 + HOUR
        got = raw_rows(store, since_ms=kept)
        assert got == sorted(r for r in truth if r[2] >= kept)
        daily = store.query("cpu_percent", node="n3", labels={"cpu": "1"}, step_ms=DAY,
                            agg="count")
        assert sum(r["value"] for r in daily) == len(ts_list)  # rollups untouched by the cap
    finally:
        store.close()


def test_a_version_1_file_is_migrated_and_its_points_packed(tmp_path):
    path = tmp_path / "v1.duckdb"
    old_store_file(path, 1, "old", {"cpu": "0"}, T0, range(180), "i / 10").close()
    store = Store(path, StorageConfig(rollups_enabled=False), clock_ms=lambda: T0 + DAY)
    try:
        with store._cursor() as cur:
            assert cur.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] \
                == SCHEMA_VERSION == 6
        want = [("old", "0", T0 + i * 60_000, i / 10) for i in range(180)]
        assert raw_rows(store) == want
        assert store.maintain(budget_s=30)["packed_points"] == 180
        # a small series: hour 0 in its own table, the next ones share one to the end of the day
        assert store.stats()["rows"]["chunk_tables"] == 2 and raw_rows(store) == want
    finally:
        store.close()


def test_a_small_fleet_shares_one_table_to_the_end_of_the_day(tmp_path):
    """An hour of a few series would waste most of a block per hour table: after a first
    small hour the next table spans the rest of the UTC day; it is dropped only when the whole
    day has expired, and every read is the same."""
    rng = np.random.default_rng(12)
    clock = {"ms": T0 + 30 * HOUR}
    store = Store(tmp_path / "small.duckdb", StorageConfig(raw_retention_hours=24),
                  clock_ms=lambda: clock["ms"])
    try:
        ts_list = [T0 + 22 * HOUR + i * 60_000 for i in range(5 * 60)]  # 22:00 to 03:00
        batches, truth = batches_for(rng, range(1, len(ts_list) + 1), ts_list)
        store.write(batches)
        store.maintain(budget_s=30)
        day = (T0 + DAY) // HOUR
        with store._cursor() as cur:
            assert chunk_tables(cur) == [ChunkTable(day - 2, 1), ChunkTable(day - 1, 1),
                                         ChunkTable(day, 24)]
        assert raw_rows(store) == sorted(truth)
        clock["ms"] = T0 + 2 * DAY + 2 * HOUR  # raw before 02:00 of day 1 has expired
        store.maintain(budget_s=30)
        with store._cursor() as cur:  # the day table holds 01:00-03:00 still wanted: kept
            assert chunk_tables(cur) == [ChunkTable(day, 24)]
        kept = store.stats()["kept_since_ms"]["raw"]
        assert kept == T0 + DAY + 2 * HOUR
        assert raw_rows(store, since_ms=kept) == sorted(r for r in truth if r[2] >= kept)
    finally:
        store.close()


def test_live_packing_waits_for_the_whole_window(tmp_path):
    """Light rounds run every few seconds: packing each newly settled minute would make chunks
    of a minute, which compress far worse. Only whole settled windows (WINDOW_MS) are packed,
    each into its hour's table, and reads are the same whatever was packed."""
    assert HOUR % packing.WINDOW_MS == 0 and packing.WINDOW_MS == 15 * MIN
    rng = np.random.default_rng(13)
    clock = {"ms": T0 + HOUR + 25 * MIN}  # settled up to 01:23: windows before 01:15
    store = Store(tmp_path / "live.duckdb", clock_ms=lambda: clock["ms"])
    try:
        ts_list = [T0 + i * 10_000 for i in range(int(1.5 * 360))]  # 00:00 to 01:30
        batches, truth = batches_for(rng, range(1, len(ts_list) + 1), ts_list)
        store.write(batches)
        store.roll_up(budget_s=30)
        store.maintain(budget_s=30)
        rows = store.stats()["rows"]
        cut = T0 + HOUR + 15 * MIN
        assert rows["packed_points"] == sum(1 for r in truth if r[2] < cut)
        assert rows["points"] == sum(1 for r in truth if r[2] >= cut)  # 01:15-01:30 waits
        assert rows["chunks"] == 4 * 5 * 2  # per series (2 nodes x 4): one per window
        assert raw_rows(store) == sorted(truth)
        clock["ms"] = T0 + HOUR + 33 * MIN  # the window has ended and settled
        store.maintain(budget_s=30)
        rows = store.stats()["rows"]
        assert rows["points"] == 0 and rows["packed_points"] == len(truth)
        assert raw_rows(store) == sorted(truth)
    finally:
        store.close()


def test_new_files_get_the_small_block_size_and_old_files_keep_theirs(tmp_path):
    """A file this build creates uses NEW_FILE_BLOCK_SIZE (a table costs a block, not 256 KiB);
    a file created with DuckDB's default 256 KiB blocks (every earlier build) opens as it is,
    its points readable and new ones written to it."""
    new, old = tmp_path / "new.duckdb", tmp_path / "old.duckdb"
    # as the previous build made it: DuckDB's default block size
    old_store_file(old, 1, "old", {"cpu": "0"}, T0, range(60), "i / 10").close()
    rng = np.random.default_rng(5)
    batches, truth = batches_for(rng, range(1, 61), [T0 + HOUR + i * 60_000 for i in range(60)])
    for path, size in ((new, NEW_FILE_BLOCK_SIZE), (old, 262_144)):
        for _ in range(2):  # created (or migrated), then reopened
            store = Store(path, StorageConfig(rollups_enabled=False), clock_ms=lambda: T0 + DAY)
            try:
                with store._cursor() as cur:
                    assert cur.execute("SELECT block_size FROM pragma_database_size() WHERE "
                                       "database_name = current_database()").fetchall()[0][0] \
                        == size
                    # a small fleet's day tables: below 4 blocks of payload an hour
                    assert small_table_bytes(cur) == 4 * size
                store.write(batches)
                store.maintain(budget_s=30)
                want = sorted(truth) if path == new else sorted(
                    truth + [("old", "0", T0 + i * 60_000, i / 10) for i in range(60)])
                assert raw_rows(store) == want
            finally:
                store.close()
    assert NEW_FILE_BLOCK_SIZE < 262_144
