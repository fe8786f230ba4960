"""Live detection on the maxima of whole time buckets (`analytics.detect_step_secs`, issue 14).

A real Store on a temp DuckDB file; jobs are answered by the real worker code
(`legion.analytics.worker.process`) with the `mad` detector. The expected maxima are computed
here from the points written, with numpy.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from legion.aggregator.analytics_bridge import JobBook
from legion.aggregator.analytics_bridge.bucketed import FEW_SERIES, SETTLE_MS, BucketedDetect
from legion.aggregator.analytics_bridge.jobs import model_folder
from legion.aggregator.analytics_bridge.new_points import NewPoints
from legion.aggregator.analytics_bridge.watched import NODE_VECTOR, WatchedSeries, select_watched
from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store
from legion.analytics.buckets import bucket_extreme
from legion.analytics.config import AnalyticsConfig
from legion.analytics.worker import process
from legion.cli.config import config_from_dict
from legion.proto import MetricsBatch, Sample
from legion.proto.jobs import Job, decode_job, encode_result
from tests.aggregator.worker_answers import answer, unstarted_bridge

METRIC = "system_memory_usage_percent"  # watched, no required labels
STEP_MS = 60_000
NOW = 1_800_000_000_000  # the stores' clock: retention is measured from it
T0 = NOW - 3 * 3600_000  # aligned to the minute: the first bucket starts here


class Rig:
    def __init__(self, tmp: Path, storage: StorageConfig | None = None) -> None:
        self.store = Store(tmp / "legion.duckdb", storage or StorageConfig(),
                           clock_ms=lambda: NOW)
        self.sent: list[bytes] = []
        self.book = JobBook(self.sent.append, timeout_secs=30, models_dir=tmp / "models",
                            folder=model_folder(STEP_MS / 1000))
        self.known: dict[str, WatchedSeries] = {}
        self.acfg = AnalyticsConfig(detector="mad", window_size=40,
                                    detect_step_secs=STEP_MS / 1000)
        self.news: NewPoints[WatchedSeries] = NewPoints(self.store, select_watched)
        self.det = BucketedDetect(self.store, self.news, self.book, self.known, self.acfg)
        self.seq = 0
        self.values: dict[str, dict[int, float]] = {}  # node -> ts -> value written

    def write(self, node: str, seconds: range, rng: np.random.Generator,
              metrics: tuple[str, ...] = (METRIC,)) -> None:
        samples = []
        for t in seconds:
            ts = T0 + t * 1000
            for m in metrics:
                v = float(rng.normal(50, 5))
                samples.append(Sample(m, (), v, ts))
                if m == METRIC:
                    self.values.setdefault(node, {})[ts] = v
        self.seq += 1
        self.store.write([IncomingBatch(node, 1, self.seq, MetricsBatch.from_samples(samples),
                                        T0 + seconds.stop * 1000)])

    def expected(self, node: str, buckets: range) -> tuple[list[int], list[float]]:
        """Bucket starts and maxima of what was written, for these bucket numbers."""
        vals = self.values[node]
        starts = [T0 + b * STEP_MS for b in buckets]
        return starts, [max(v for t, v in vals.items() if s <= t < s + STEP_MS) for s in starts]

    def tick(self, now_ms: int) -> list[Job]:
        """One pass; the jobs it sent, answered by the real worker code."""
        before = len(self.sent)
        self.det.schedule(now_ms=now_ms)
        return answer(self.book, self.sent[before:])


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.store.close()


def at(minutes: float) -> int:
    """The time at which the buckets before minute `minutes` have settled."""
    return T0 + int(minutes * STEP_MS) + SETTLE_MS


def test_a_job_carries_the_max_of_each_whole_settled_bucket(rig: Rig) -> None:
    rng = np.random.default_rng(1)
    rig.write("n1", range(12 * 60 + 30), rng)  # 12.5 minutes of 1 s points
    rig.values["n1"][T0 + 5 * STEP_MS + 17_000] = 500.0  # one-second spike in bucket 5
    rig.store.write([IncomingBatch("n1", 1, 99, MetricsBatch.from_samples(
        [Sample(METRIC, (), 500.0, T0 + 5 * STEP_MS + 17_000)]), T0)])
    # Bucket 11 has ended but not settled yet: only buckets 0-10 are read.
    jobs = rig.tick(at(12) - 1)
    assert len(jobs) == 1
    ts, vals = rig.expected("n1", range(11))
    assert jobs[0].ts_ms.tolist() == ts
    assert jobs[0].values.tolist() == pytest.approx(vals)
    assert jobs[0].values[5] == 500.0
    assert jobs[0].warmup == 0  # fewer buckets than FIRST_SCORED: all of them scored

    # Nothing new settled: no job, and no store read.
    reads = rig.det.queries
    assert rig.tick(at(12) - 1) == [] and rig.det.queries == reads
    # Bucket 11 settles, then 12 (its last points written later): each goes out once.
    assert [j.ts_ms.tolist() for j in rig.tick(at(12))] == [[T0 + 11 * STEP_MS]]
    rig.write("n1", range(12 * 60 + 30, 14 * 60), rng)
    jobs = rig.tick(at(14))
    ts, vals = rig.expected("n1", range(12, 14))
    assert [j.ts_ms.tolist() for j in jobs] == [ts]
    assert jobs[0].values.tolist() == pytest.approx(vals)


def test_offline_bucket_extreme_equals_the_stored_maxima_live_jobs_carry(rig: Rig) -> None:
    """`legionctl detect --step` scores the same rows as the live path."""
    rng = np.random.default_rng(11)
    rig.write("n1", range(0, 9 * 60, 3), rng)  # every 3 s, then a gap, then every 7 s
    rig.write("n1", range(13 * 60 + 5, 20 * 60, 7), rng)
    live = rig.tick(at(20))
    assert len(live) == 1
    written = sorted(rig.values["n1"].items())
    starts, maxima = bucket_extreme(np.array([t for t, _ in written]),
                                    np.array([v for _, v in written]), STEP_MS)
    assert live[0].ts_ms.tolist() == starts.tolist()
    assert live[0].values.tolist() == pytest.approx(maxima.tolist())


def test_a_success_rate_is_scored_on_bucket_minima(rig: Rig) -> None:
    """Low is bad for a success rate: a 20 s dip must not hide behind the bucket's good seconds."""
    rate = "agent_success_rate_percent"
    written: dict[int, float] = {}
    for t in range(12 * 60):
        written[T0 + t * 1000] = 30.0 if 5 * 60 + 10 <= t < 5 * 60 + 30 else 99.0 + t % 3 / 10
    rig.store.write([IncomingBatch("n1", 1, 1, MetricsBatch.from_samples(
        [Sample(rate, (), v, ts) for ts, v in written.items()]), T0 + 12 * STEP_MS)])
    jobs = rig.tick(at(12))
    assert len(jobs) == 1 and rate in jobs[0].series
    starts, minima = bucket_extreme(np.array(list(written)), np.array(list(written.values())),
                                    STEP_MS, "min")
    assert jobs[0].ts_ms.tolist() == starts.tolist()
    assert jobs[0].values.tolist() == pytest.approx(minima.tolist())
    assert jobs[0].values[5] == 30.0 and max(jobs[0].values) < 99.5


def test_a_point_for_a_bucket_already_scored_is_stored_not_scored_again(rig: Rig) -> None:
    rng = np.random.default_rng(2)
    rig.write("n1", range(11 * 60), rng)
    assert len(rig.tick(at(11))) == 1
    rig.write("n1", range(3 * 60, 3 * 60 + 5), rng)  # late points for bucket 3
    rig.write("n1", range(11 * 60, 12 * 60), rng)
    jobs = rig.tick(at(12))
    assert [j.ts_ms.tolist() for j in jobs] == [[T0 + 11 * STEP_MS]]
    # stored beside the first five points of those seconds
    assert len(rig.store.query(METRIC, since_ms=T0 + 3 * STEP_MS,
                               until_ms=T0 + 3 * STEP_MS + 5000)) == 10


def test_a_new_series_waits_for_enough_buckets_then_gets_its_history(rig: Rig) -> None:
    rng = np.random.default_rng(3)
    need = rig.acfg.window_size // 4
    rig.write("n1", range((need - 1) * 60), rng)
    assert rig.tick(at(need - 1)) == []  # one bucket short
    rig.write("n1", range((need - 1) * 60, (need + 40) * 60), rng)
    jobs = rig.tick(at(need + 40))
    ts, _ = rig.expected("n1", range(need + 40))
    assert [j.ts_ms.tolist() for j in jobs] == [ts]
    assert jobs[0].warmup == need + 40 - 30  # trains on the history, scores the newest 30


def test_series_already_modelled_and_new_ones_are_read_together(rig: Rig) -> None:
    rng = np.random.default_rng(4)
    rig.write("n1", range(120 * 60), rng)
    assert len(rig.tick(at(120))) == 1
    rig.write("n1", range(120 * 60, 121 * 60), rng)
    rig.write("n2", range(121 * 60), rng)  # a new node with two hours of history
    jobs = {j.series.split("|")[0]: j for j in rig.tick(at(121))}
    assert jobs["n1"].ts_ms.tolist() == [T0 + 120 * STEP_MS]
    assert jobs["n2"].ts_ms.tolist() == rig.expected("n2", range(121))[0]


def test_a_series_that_stopped_reporting_costs_no_read(rig: Rig) -> None:
    rng = np.random.default_rng(7)
    rig.write("n1", range(11 * 60), rng)
    assert len(rig.tick(at(11))) == 1
    reads = rig.det.queries
    for minutes in range(12, 40):
        assert rig.tick(at(minutes)) == []
    assert rig.det.queries == reads


def test_series_needing_the_same_range_share_a_read_when_many(rig: Rig) -> None:
    rng = np.random.default_rng(8)
    for n in range(FEW_SERIES + 2):
        rig.write(f"n{n}", range(11 * 60), rng)
    jobs = rig.tick(at(11))
    assert len(jobs) == FEW_SERIES + 2 and rig.det.queries == 1
    for job in jobs:
        node = job.series.split("|")[0]
        assert job.values.tolist() == pytest.approx(rig.expected(node, range(11))[1])
    for n in ("m1", "m2"):  # two new nodes: a read each, of their own series only
        rig.write(n, range(12 * 60), rng)
    for n in range(FEW_SERIES + 2):
        rig.write(f"n{n}", range(11 * 60, 12 * 60), rng)
    jobs = rig.tick(at(12))
    assert len(jobs) == FEW_SERIES + 4 and rig.det.queries == 1 + 1 + 2


def test_history_starts_where_the_store_still_keeps_points(tmp_path: Path) -> None:
    # Without rollups a 1 min step reads raw points, kept here for one hour only: a history of
    # MAX_HISTORY_POINTS minutes would be refused by the store.
    r = Rig(tmp_path, StorageConfig(raw_retention_hours=1, rollups_enabled=False))
    try:
        rng = np.random.default_rng(5)
        r.write("n1", range(180 * 60), rng)
        r.store.maintain(budget_s=30)
        kept = r.store.horizon_ms(STEP_MS, "max")
        assert T0 < kept <= NOW - 3600_000
        jobs = r.tick(at(180))
        assert len(jobs) == 1
        first = -(-kept // STEP_MS) * STEP_MS
        assert jobs[0].ts_ms[0] == first and jobs[0].ts_ms[-1] == T0 + 179 * STEP_MS
    finally:
        r.store.close()


def test_a_model_behind_the_store_horizon_reads_from_the_horizon(tmp_path: Path) -> None:
    # The aggregator scored 30 minutes, then was down while two and a half hours came in and raw
    # retention (one hour, no rollups) deleted the buckets after its model's last one.
    r = Rig(tmp_path, StorageConfig(raw_retention_hours=1, rollups_enabled=False))
    try:
        rng = np.random.default_rng(9)
        r.write("n1", range(30 * 60), rng)
        assert len(r.tick(at(30))) == 1
        r.write("n1", range(30 * 60, 180 * 60), rng)
        r.store.maintain(budget_s=30)
        kept = r.store.horizon_ms(STEP_MS, "max")
        assert kept > T0 + 30 * STEP_MS
        jobs = r.tick(at(180))
        assert len(jobs) == 1 and jobs[0].state is not None  # the model goes on
        assert jobs[0].ts_ms[0] == -(-kept // STEP_MS) * STEP_MS
        assert jobs[0].ts_ms[-1] == T0 + 179 * STEP_MS
    finally:
        r.store.close()


def test_node_rows_are_the_column_maxima_at_buckets_every_column_has(rig: Rig) -> None:
    rng = np.random.default_rng(6)
    metrics = tuple(m for m, _ in NODE_VECTOR)
    rig.write("n1", range(15 * 60), rng, metrics)
    # one column stops a minute early: its last bucket is not a row
    rig.write("n1", range(15 * 60, 16 * 60), rng, metrics[1:])
    rig.acfg = AnalyticsConfig(detector="mad", node_detector="multivar", window_size=40,
                               detect_step_secs=STEP_MS / 1000)
    rig.det.acfg = rig.acfg
    before = len(rig.sent)
    rig.det.schedule_nodes(now_ms=at(16))
    jobs = [decode_job(f) for f in rig.sent[before:]]
    assert len(jobs) == 1 and jobs[0].model == "multivar"
    assert jobs[0].ts_ms.tolist() == [T0 + b * STEP_MS for b in range(15)]
    mem = metrics.index(METRIC)
    assert jobs[0].values[:, mem].tolist() == pytest.approx(rig.expected("n1", range(15))[1])


def test_node_vectors_share_column_reads_when_many_and_a_new_node_reads_alone(rig: Rig
                                                                             ) -> None:
    rng = np.random.default_rng(10)
    metrics = tuple(m for m, _ in NODE_VECTOR)
    nodes = [f"n{i}" for i in range(FEW_SERIES + 1)]
    for n in nodes:
        rig.write(n, range(15 * 60), rng, metrics)
    rig.acfg = rig.det.acfg = AnalyticsConfig(detector="mad", node_detector="multivar",
                                              window_size=40, detect_step_secs=STEP_MS / 1000)
    before = len(rig.sent)
    rig.det.schedule_nodes(now_ms=at(15))
    assert len(answer(rig.book, rig.sent[before:])) == len(nodes)
    assert rig.det.queries == len(NODE_VECTOR)  # one read per column for all of them
    for n in nodes:
        rig.write(n, range(15 * 60, 16 * 60), rng, metrics)
    rig.write("new", range(16 * 60), rng, metrics)
    before, reads = len(rig.sent), rig.det.queries
    rig.det.schedule_nodes(now_ms=at(16))
    jobs = {j.series.split("|")[0]: j for j in answer(rig.book, rig.sent[before:])}
    assert set(jobs) == {*nodes, "new"}
    assert rig.det.queries - reads == 2 * len(NODE_VECTOR)  # the modelled nodes, then the new
    assert jobs["new"].ts_ms.tolist() == [T0 + b * STEP_MS for b in range(16)]
    assert jobs["n0"].ts_ms.tolist() == [T0 + 15 * STEP_MS]


def test_models_of_buckets_and_of_raw_points_live_apart(tmp_path: Path) -> None:
    sent: list[bytes] = []
    book = JobBook(sent.append, models_dir=tmp_path, folder=model_folder(60))
    key = f"n|{METRIC}|"
    job = book.detect_job(key, np.arange(20, dtype=np.int64) * STEP_MS, np.ones(20), model="mad")
    assert job is not None
    book.submit(job)
    book.on_result(encode_result(process(job, "w1")))
    assert book.stats["models_saved"] == 1 and (tmp_path / "detectors-60s").is_dir()
    assert JobBook(sent.append, models_dir=tmp_path, folder=model_folder(0)).state == {}
    assert JobBook(sent.append, models_dir=tmp_path, folder=model_folder(300)).state == {}
    assert set(JobBook(sent.append, models_dir=tmp_path, folder=model_folder(60)).state) == {key}


@pytest.mark.parametrize(("step", "ok"), [(0, True), (300, True), (1, True), (0.5, False),
                                          (-60, False), (90.5, False)])
def test_detect_step_is_zero_or_whole_seconds(step: float, ok: bool) -> None:
    problems = AnalyticsConfig(detect_step_secs=step).validate()
    assert (problems == []) is ok, problems
    if not ok:
        assert "analytics.detect_step_secs" in problems[0]


def test_anomaly_events_say_when_their_bucket_ended(tmp_path: Path) -> None:
    """A bucketed score is stamped at its bucket's start but known only after the bucket ends:
    the anomaly event carries `end_ms`, from which the dashboard counts it recent."""
    config = config_from_dict({"security": {"enable_tls": False},
                               "analytics": {"detector": "mad", "window_size": 40,
                                             "detect_step_secs": 60}},
                              base_dir=tmp_path).aggregator_settings()
    now = int(time.time() * 1000)
    t0 = now // STEP_MS * STEP_MS - 180 * STEP_MS  # 3 h of whole minutes, a spike near the end
    rng = np.random.default_rng(12)
    samples = [Sample(METRIC, (), float(rng.normal(50, 1)), t0 + s * 1000)
               for s in range(0, 180 * 60, 10)]
    samples.append(Sample(METRIC, (), 400.0, t0 + 178 * STEP_MS + 20_000))
    store = Store(tmp_path / "legion.duckdb")
    try:
        store.write([IncomingBatch("n1", 1, 1, MetricsBatch.from_samples(samples), now)])
        bridge, sent, _ = unstarted_bridge(config, store)
        assert bridge._book is not None
        bridge._bucketed = BucketedDetect(store, bridge.news, bridge._book, bridge._series,
                                          config.analytics)
        bridge._bucketed.schedule(now_ms=t0 + 180 * STEP_MS + SETTLE_MS)
        assert len(sent) == 1
        res = process(decode_job(sent[0]), "w1")
        assert res.ok, res.error
        bridge._on_result(encode_result(res))
        events = bridge.recent_anomalies()
        spike = [e for e in events if e["ts_ms"] == t0 + 178 * STEP_MS]
        assert spike and spike[0]["end_ms"] == spike[0]["ts_ms"] + STEP_MS
        assert all(e["end_ms"] == e["ts_ms"] + STEP_MS for e in events)
    finally:
        store.close()
