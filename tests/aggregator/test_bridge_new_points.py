"""The bridge's scheduling reads only what is new (issues 13 and 17: its per-tick cost).

A real Store on a temp DuckDB file; the store is wrapped in a recorder that counts the calls the
scheduler makes (series listing and raw reads) and passes them on unchanged. Results come from
the real worker code (`legion.analytics.worker.process`) with the `mad` detector.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from legion.aggregator.analytics_bridge import JobBook
from legion.aggregator.analytics_bridge.new_points import NewPoints
from legion.aggregator.analytics_bridge.watched import (
    NODE_VECTOR,
    WatchedSeries,
    schedule_detect,
    schedule_forecasts,
    schedule_node_detect,
    select_watched,
)
from legion.aggregator.store import IncomingBatch, Store
from legion.aggregator.store.query import SeriesRow
from legion.analytics.config import AnalyticsConfig
from legion.proto import MetricsBatch, Sample, canonical_labels
from legion.proto.jobs import decode_job
from tests.aggregator.worker_answers import answer

METRIC = "system_memory_usage_percent"  # watched, no required labels


class Recorder:
    """Passes the scheduler's store calls through to the real Store, counting them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.read_ids: list[int] = []
        self.listings = 0

    def series_count(self) -> int:
        return self.store.series_count()

    def series_of(self, metric: str) -> list[SeriesRow]:
        self.listings += 1
        return self.store.series_of(metric)

    def newest_ts(self, ids: Sequence[int]) -> list[int]:
        return self.store.newest_ts(ids)

    def raw_since(self, ids: Sequence[int], since_ms: int) -> list[tuple[int, int, float]]:
        self.read_ids.extend(ids)
        return self.store.raw_since(ids, since_ms)


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(tmp / "legion.duckdb")
        self.rec = Recorder(self.store)
        self.news: NewPoints[WatchedSeries] = NewPoints(self.rec, select_watched)
        self.sent: list[bytes] = []
        self.book = JobBook(self.sent.append, timeout_secs=30)
        self.known: dict[str, WatchedSeries] = {}
        self.acfg = AnalyticsConfig(detector="mad", window_size=40)
        self.seq = 0
        self.t0 = int(time.time() * 1000) // 1000 * 1000 - 300_000

    def write(self, node: str, ticks: range, extra: Sequence[Sample] = ()) -> None:
        samples = [Sample(METRIC, (), 50.0 + (t % 7), self.t0 + t * 1000) for t in ticks]
        self.seq += 1
        self.store.write([IncomingBatch(node, 1, self.seq,
                                        MetricsBatch.from_samples([*samples, *extra]),
                                        self.t0)])

    def tick(self) -> list[Any]:
        """One detect pass; the jobs it sent, answered by the real worker code."""
        before = len(self.sent)
        schedule_detect(self.news, self.book, self.known, self.acfg, 1.0)
        return answer(self.book, self.sent[before:])


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.store.close()


def sid_of(store: Store, node: str) -> int:
    return next(r.id for r in store.series_of(METRIC) if r.node == node)


def test_a_series_without_new_points_is_not_read_again(rig: Rig) -> None:
    rig.write("a", range(100))
    rig.write("b", range(100))
    first = rig.tick()
    assert sorted(j.series.split("|")[0] for j in first) == ["a", "b"]
    assert sorted(rig.rec.read_ids) == sorted([sid_of(rig.store, "a"), sid_of(rig.store, "b")])

    rig.rec.read_ids.clear()
    assert rig.tick() == [] and rig.rec.read_ids == []  # nothing new: nothing read

    rig.write("a", range(100, 103))  # only a has new points
    jobs = rig.tick()
    assert rig.rec.read_ids == [sid_of(rig.store, "a")]
    assert len(jobs) == 1 and jobs[0].ts_ms.tolist() == [rig.t0 + t * 1000 for t in (100, 101, 102)]


def test_a_given_up_job_is_not_reread_until_a_new_point(rig: Rig) -> None:
    """No worker answers: after the last attempt the series waits for a newer point, and then
    its job still starts after its last scored point (nothing is skipped)."""
    rig.write("a", range(100))
    rig.tick()  # a state: scored up to tick 99
    rig.write("a", range(100, 105))
    before = len(rig.sent)
    schedule_detect(rig.news, rig.book, rig.known, rig.acfg, 1.0)  # sent, never answered
    assert len(rig.sent) == before + 1
    give_up(rig.book)
    rig.rec.read_ids.clear()
    schedule_detect(rig.news, rig.book, rig.known, rig.acfg, 1.0)
    assert rig.rec.read_ids == [] and len(rig.sent) == before + 1

    rig.write("a", range(105, 106))
    jobs = rig.tick()
    assert [t for j in jobs for t in j.ts_ms.tolist()] == [rig.t0 + t * 1000
                                                           for t in range(100, 106)]


def test_the_watched_set_is_listed_again_only_after_new_series(rig: Rig) -> None:
    rig.write("a", range(100))
    rig.tick()
    listed = rig.rec.listings
    rig.write("a", range(100, 101))
    rig.tick()
    assert rig.rec.listings == listed  # same series: the cached set is used
    rig.write("c", range(100))  # a new series
    jobs = rig.tick()
    assert rig.rec.listings > listed
    assert [j.series.split("|")[0] for j in jobs] == ["c"]


def test_a_pass_is_bounded_and_the_next_one_goes_on(rig: Rig,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With no time budget a pass reads one group (here one series) and says how many are
    left; the following passes take the rest, oldest pending first, none twice."""
    import legion.aggregator.analytics_bridge.new_points as new_points

    monkeypatch.setattr(new_points, "READ_GROUP_SERIES", 1)
    for node in ("a", "b", "c"):
        rig.write(node, range(100))
    lefts = [schedule_detect(rig.news, rig.book, rig.known, rig.acfg, 1.0, budget_s=0.0)
             for _ in range(4)]
    assert lefts == [2, 1, 0, 0]
    assert sorted(rig.rec.read_ids) == sorted(sid_of(rig.store, n) for n in "abc")
    assert sorted(decode_job(f).series.split("|")[0] for f in rig.sent) == ["a", "b", "c"]


def give_up(book: JobBook) -> None:
    """Every job in flight times out for good (as with no worker connected)."""
    book.max_attempts = 0
    book.clock = lambda: time.monotonic() + 3600
    book.resend_expired()
    assert not book.in_flight


def test_a_node_without_new_ticks_is_not_read_again(rig: Rig) -> None:
    ts = [rig.t0 + t * 1000 for t in range(60)]
    rig.store.write([IncomingBatch("n", 1, 99, MetricsBatch.from_samples(
        [Sample(m, (), float(i % 5), t) for t in ts for i, (m, _) in enumerate(NODE_VECTOR)]
        + [Sample("system_cpu_usage_percent", canonical_labels({"cpu": "0"}), 1.0, ts[-1])]),
        rig.t0)])
    schedule_node_detect(rig.news, rig.book, rig.known, rig.acfg, 1.0)
    assert len(rig.sent) == 1
    job = decode_job(rig.sent[0])
    assert job.values.shape == (60, len(NODE_VECTOR))
    assert np.array_equal(job.ts_ms, np.array(ts))
    give_up(rig.book)
    rig.rec.read_ids.clear()
    schedule_node_detect(rig.news, rig.book, rig.known, rig.acfg, 1.0)
    assert rig.rec.read_ids == [] and len(rig.sent) == 1

    rig.write("n", range(60, 61))  # one column moves on: still no new row, nothing read
    schedule_node_detect(rig.news, rig.book, rig.known, rig.acfg, 1.0)
    assert rig.rec.read_ids == [] and len(rig.sent) == 1


def test_forecast_jobs_per_series_from_one_read_per_metric(rig: Rig) -> None:
    """Each predicted series gets its own job with its own per-minute averages; a per-core cpu
    series and a series with under 10 minutes of history get none."""
    t0 = (rig.t0 // 60_000 - 20) * 60_000  # minute-aligned: one step per minute
    cpu = "system_cpu_usage_percent"
    samples = [Sample(cpu, (), 10.0 + m, t0 + m * 60_000 + s * 1000)
               for m in range(20) for s in (0, 30)]  # node a: 20 minutes, two points each
    samples += [Sample(cpu, canonical_labels({"cpu": "0"}), 99.0, t0 + m * 60_000)
                for m in range(20)]
    rig.store.write([IncomingBatch("a", 1, 1, MetricsBatch.from_samples(samples), t0)])
    rig.store.write([IncomingBatch("b", 1, 1, MetricsBatch.from_samples(
        [Sample(cpu, (), 1.0, t0 + m * 60_000) for m in range(5)]), t0)])
    rig.store.write([IncomingBatch("c", 1, 1, MetricsBatch.from_samples(
        [Sample(cpu, (), 5.0 + m % 2, t0 + m * 60_000) for m in range(12)]), t0)])
    acfg = AnalyticsConfig(prediction_config={"cpu_usage": AnalyticsConfig().prediction_config[
        "cpu_usage"]})
    schedule_forecasts(rig.store, rig.book, rig.known, acfg)
    jobs = {j.series: j for j in map(decode_job, rig.sent)}
    assert sorted(jobs) == [f"a|{cpu}||cpu_usage", f"c|{cpu}||cpu_usage"]
    a = jobs[f"a|{cpu}||cpu_usage"]
    assert a.ts_ms.tolist() == [t0 + m * 60_000 for m in range(20)]
    assert a.values.tolist() == [10.0 + m for m in range(20)]
    assert jobs[f"c|{cpu}||cpu_usage"].values.tolist() == [5.0 + m % 2 for m in range(12)]
