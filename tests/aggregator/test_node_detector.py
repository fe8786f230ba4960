"""`analytics.node_detector`: one multivariate model over each node's host metrics.

The bridge builds node jobs from a real Store, the real worker function scores them, and the
scores come back as ordinary series. The socket path is the same as for series jobs (covered by
tests/legion/test_analytics_pipeline.py); what is new here is the job's shape and its round trip.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from legion.aggregator.analytics_bridge.watched import NODE_VECTOR, NODE_VECTOR_METRIC
from legion.aggregator.store import IncomingBatch, Store
from legion.analytics.detectors import DETECTORS
from legion.analytics.worker import process
from legion.cli.config import config_from_dict
from legion.kernel.errors import ConfigError
from legion.proto import MetricsBatch, Sample, canonical_labels
from legion.proto.jobs import Job, JobError, decode_job, encode_job, encode_result
from tests.aggregator.worker_answers import unstarted_bridge

needs_torch = pytest.mark.skipif("multivar" not in DETECTORS,
                                 reason="torch (legion-monitor[deep]) is not installed")


def test_node_jobs_carry_rows_and_refuse_bad_shapes() -> None:
    rows = np.arange(12, dtype=float).reshape(3, 4)
    job = Job("j1", "detect", "n|node_vector|", np.array([1, 2, 3], np.int64), rows, "multivar")
    back = decode_job(encode_job(job))
    assert back.values.shape == (3, 4) and np.array_equal(back.values, rows)
    flat = decode_job(encode_job(Job("j2", "detect", "s", np.array([1, 2], np.int64),
                                     np.array([1.0, 2.0]))))
    assert flat.values.shape == (2,)
    import msgpack

    for width, x in ((0, rows), (5, rows), (65, np.zeros(65 * 3))):
        d = msgpack.unpackb(encode_job(job), raw=False)
        d.update(w=width, x=np.asarray(x, "<f8").tobytes())
        with pytest.raises(JobError):
            decode_job(msgpack.packb(d, use_bin_type=True))


def test_a_single_series_detector_refuses_a_node_job() -> None:
    rows = np.random.default_rng(0).normal(size=(60, 4))
    res = process(Job("j", "detect", "n|node_vector|", np.arange(60, dtype=np.int64) * 1000,
                      rows, "mad"))
    assert not res.ok and "node rows" in res.error


def test_node_detector_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="analytics.node_detector"):
        config_from_dict({"analytics": {"node_detector": "knn"}}, base_dir=tmp_path)


@needs_torch
def test_node_jobs_from_the_store_scored_and_stored(tmp_path: Path) -> None:
    config = config_from_dict({"security": {"enable_tls": False},
                               "analytics": {"node_detector": "multivar"}},
                              base_dir=tmp_path).aggregator_settings()
    store = Store(tmp_path / "legion.duckdb")
    try:
        now = int(time.time() * 1000) // 1000 * 1000
        ts = now - np.arange(400)[::-1].astype(np.int64) * 1000  # 400 ticks at 1 s
        rng = np.random.default_rng(3)
        samples = []
        for i, t in enumerate(ts.tolist()):
            jump = 40.0 if i >= 390 else 0.0  # the node's cpu and load jump together at the end
            vals = (30 + rng.normal(0, 1) + jump, 50 + rng.normal(0, 0.5),
                    1.0 + rng.normal(0, 0.05) + jump / 20, 200 + rng.integers(-2, 3))
            for (metric, _), v in zip(NODE_VECTOR, vals, strict=True):
                samples.append(Sample(metric, (), float(v), t))
            samples.append(Sample("system_cpu_usage_percent", canonical_labels({"cpu": "0"}),
                                  99.0, t))  # a per-core series: not part of the vector
        samples.append(Sample("system_load1", (), 1.0, int(ts[-1]) + 500))  # a lone timestamp
        store.write([IncomingBatch("web-1", 1, 1, MetricsBatch.from_samples(samples), now)])

        bridge, sent, submitted = unstarted_bridge(config, store)
        bridge._schedule_node_detect()
        assert len(sent) == 1
        job = decode_job(sent[0])
        assert job.model == "multivar" and job.values.shape == (400, len(NODE_VECTOR))
        assert np.array_equal(job.ts_ms, ts)  # only timestamps every column has
        assert np.array_equal(job.values[:, 0] >= 60, np.arange(400) >= 390)
        res = process(job, "w1")
        assert res.ok, res.error
        bridge._on_result(encode_result(res))
        store.write(submitted)
        scores = store.query("legion_anomaly_score", node="analytics",
                             labels={"node": "web-1", "metric": NODE_VECTOR_METRIC})
        assert len(scores) == 30  # the newest 30 ticks; the rest was history (warmup)
        values = [r["value"] for r in scores]
        assert all(0 <= v <= 1 for v in values)
        assert max(values[-10:]) > max(values[:20])  # the joint jump stands out
        bridge._schedule_node_detect()  # nothing new: no job
        assert len(sent) == 1
    finally:
        store.close()
