"""Multivariate detector, model lifecycle (retrain by age / on demand, persistence), bands from
the store."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from legion.aggregator.analytics_bridge import JobBook, band_from_store
from legion.analytics import models
from legion.analytics.bands import HOUR_MS, band_from_record, band_record
from legion.analytics.detectors import DETECTORS, make_detector
from legion.analytics.worker import process
from legion.proto.jobs import Job, encode_result

STEP = 300_000
T0 = 1_700_000_000_000


def node_metrics(n: int = 900, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """cpu, load (follows cpu), mem, disk of one node; from 700 load rises while cpu stays put."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cpu = 40 + 15 * np.sin(2 * np.pi * t / 96) + rng.normal(0, 2, n)
    load = cpu / 20 + rng.normal(0, 0.1, n)
    mem = 60 + 0.01 * t + rng.normal(0, 0.5, n)
    disk = 30 + rng.normal(0, 0.2, n)
    x = np.c_[cpu, load, mem, disk]
    x[700:, 1] += 2.0   # relation broken: load high, cpu normal (each value alone is in range)
    return T0 + t.astype(np.int64) * STEP, x


def test_multivar_vector_mode_flags_a_broken_relation_and_round_trips(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    ts, x = node_metrics()
    det = make_detector("multivar")
    first = det.score_matrix(ts[:650], x[:650])
    rec = models.load(models.save(tmp_path / "node.npz",
                                  models.detector_record(det, int(ts[0]), int(ts[649]))))
    assert rec.score is not None and rec.score > 0          # fit quality is saved
    rest = models.restore_detector(rec).score_matrix(ts[650:], x[650:])
    whole = make_detector("multivar").score_matrix(ts, x)
    assert np.array_equal(np.r_[first, rest], whole)       # causal, restorable, deterministic
    assert whole.min() >= 0 and whole.max() <= 1
    quiet = np.quantile(whole[200:690], 0.99)
    assert whole[700:705].max() >= 0.8 > quiet
    with pytest.raises(ValueError, match="expected 4 metrics"):
        det.update_vector(int(ts[-1]) + STEP, [1.0, 2.0])
    assert det.update_vector(int(ts[-1]) + STEP, [np.nan, 1, 2, 3]) == 0.0


def test_detectors_run_without_torch_and_say_so_once() -> None:
    code = ("import sys; sys.modules['torch'] = None; import importlib.util as u; "
            "orig = u.find_spec; u.find_spec = lambda n, *a: None if n == 'torch' else orig(n, *a);"
            " import legion.analytics.detectors as d; import numpy as np; "
            "print('multivar' in d.DETECTORS, bool(d.TORCH_NOTE)); "
            "print(len(d.make_detector('ensemble').score(np.arange(50), np.ones(50))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "True", "50"], out.stderr


def _job(jid: str, ts: np.ndarray, v: np.ndarray, state: bytes | None, **params: object) -> Job:
    return Job(jid, "detect", "n|m|", ts, v, "knn", params=dict(params), state=state)


def test_worker_retrains_by_data_age_and_on_demand(series: tuple[np.ndarray, np.ndarray]) -> None:
    ts, v = series
    day = 48 * HOUR_MS  # "retrain every 2 days"
    r1 = process(_job("a", ts[:300], v[:300], None, retrain_ms=day))
    rec1 = models.loads(r1.state)
    assert (rec1.version, rec1.retrained_ms) == (1, int(ts[0]))     # 300 x 5 min < 2 days
    r2 = process(_job("b", ts[300:], v[300:], r1.state, retrain_ms=day))
    rec2 = models.loads(r2.state)
    assert rec2.version == 2 and rec2.retrained_ms == int(ts[-1])    # 700 x 5 min > 2 days
    assert rec2.trained_from_ms == int(ts[0]) and rec2.trained_to_ms == int(ts[-1])
    again = process(_job("b", ts[300:], v[300:], r1.state, retrain_ms=day))
    rec2b = models.loads(again.state)                                 # still a pure function
    assert np.array_equal(again.scores, r2.scores) and rec2b.version == 2
    assert np.array_equal(rec2b.state["ref"], rec2.state["ref"])
    r3 = process(_job("c", ts[300:310], v[300:310], r1.state, retrain_now=True))
    assert models.loads(r3.state).version == 2
    r4 = process(_job("d", ts[300:310], v[300:310], r1.state))
    assert models.loads(r4.state).version == 1                       # no lifecycle params
    # Rolling-statistics detectors have nothing to refit: version stays, the clock restarts.
    r5 = process(Job("e", "detect", "s", ts, v, "mad", params={"retrain_now": True}))
    rec5 = models.loads(r5.state)
    assert (rec5.version, rec5.retrained_ms) == (1, int(ts[-1]))


def test_dispatcher_persists_models_and_reloads_after_restart(
        tmp_path: Path, series: tuple[np.ndarray, np.ndarray]) -> None:
    ts, v = series
    sent: list[bytes] = []
    d = JobBook(sent.append, models_dir=tmp_path / "models", retrain_secs=86400)
    job = d.detect_job("web-1|cpu|", ts[:400], v[:400], model="knn", warmup=300)
    assert job is not None and job.params == {"retrain_ms": 86_400_000}
    d.submit(job)
    assert d.on_result(encode_result(process(job))) is not None
    assert d.stats["models_saved"] == 1
    (tmp_path / "models" / "detectors" / "junk.npz").write_bytes(b"not a model")
    (tmp_path / "models" / "detectors" / "junk.series").write_text("x|y|")
    # "Restart": a new dispatcher over the same folder continues the series' model.
    d2 = JobBook(sent.append, models_dir=tmp_path / "models")
    assert d2.stats["models_loaded"] == 1 and d2.stats["bad_models"] == 1
    assert d2.state["web-1|cpu|"] == d.state["web-1|cpu|"]
    job2 = d2.detect_job("web-1|cpu|", ts, v, model="knn")
    assert job2 is not None and job2.state is not None and int(job2.ts_ms[0]) == int(ts[400])
    res2 = process(job2)
    one_pass = process(Job("x", "detect", "s", ts, v, "knn", warmup=400))
    assert np.array_equal(res2.scores, one_pass.scores)
    # On demand: the next job of that series (only) carries retrain_now.
    d2.request_retrain()
    job3 = d2.detect_job("web-1|cpu|", ts, v, model="knn")
    assert job3 is not None and job3.params.get("retrain_now") is True
    assert d2.detect_job("web-1|cpu|", ts, v, model="knn").params == {}   # type: ignore[union-attr]
    # A different configured detector starts fresh instead of failing on the old state.
    job4 = d2.detect_job("web-1|cpu|", ts, v, model="mad", warmup=690)
    assert job4 is not None and job4.state is None and len(job4.ts_ms) == len(ts)


def test_band_from_stored_data(tmp_path: Path) -> None:
    from legion.aggregator.store import IncomingBatch, Store
    from legion.proto import MetricsBatch, Sample, canonical_labels

    rng = np.random.default_rng(0)
    ts = T0 - T0 % (24 * HOUR_MS) + np.arange(0, 3 * 24 * HOUR_MS, STEP, dtype=np.int64)
    hour = (ts // HOUR_MS) % 24
    cpu = np.where((hour >= 9) & (hour < 17), 80.0, 20.0) + rng.normal(0, 2, len(ts))
    now = int(ts[-1]) + 1
    store = Store(tmp_path / "legion.duckdb", clock_ms=lambda: now)
    try:
        batches = []
        for i, (t, c) in enumerate(zip(ts.tolist(), cpu.tolist(), strict=True)):
            samples = [Sample("system_cpu_usage_percent", (), c, t),
                       Sample("system_cpu_usage_percent", canonical_labels({"cpu": "0"}), 5.0, t)]
            batches.append(IncomingBatch("web-1", 1, i + 1, MetricsBatch.from_samples(samples), t))
        store.write(batches)
        band = band_from_store(store, "web-1", "system_cpu_usage_percent", {}, now_ms=now)
        assert band is not None
        lo, hi = band.limits(np.array([3 * HOUR_MS, 12 * HOUR_MS]))
        assert hi[0] < 40 < lo[1]             # the per-core series (5.0) did not leak in
        assert band.outside(3 * HOUR_MS, 80.0) and not band.outside(12 * HOUR_MS, 80.0)
        assert band.trained_to_ms <= now and band.trained_from_ms >= now - 7 * 24 * HOUR_MS
        core = band_from_store(store, "web-1", "system_cpu_usage_percent", {"cpu": "0"},
                               now_ms=now)
        assert core is not None and core.low[12] <= 5.0 <= core.high[12] < 20
        assert band_from_store(store, "web-2", "system_cpu_usage_percent", now_ms=now) is None
        rec = models.load(models.save(tmp_path / "b.npz", band_record(band, "web-1|cpu|", 2)))
        assert (rec.kind, rec.version, rec.params["series"]) == ("band", 2, "web-1|cpu|")
        back = band_from_record(rec)
        assert np.array_equal(back.low, band.low) and np.array_equal(back.high, band.high)
    finally:
        store.close()


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_refit_keeps_exact_restore(name: str, series: tuple[np.ndarray, np.ndarray]) -> None:
    ts, v = series
    det = make_detector(name)
    det.score(ts[:400], v[:400])
    did = det.refit()
    assert did == (name in {"knn", "kmeans", "ensemble", "fisher", "multivar"})
    back = models.restore_detector(models.loads(models.dumps(models.detector_record(det))))
    assert np.array_equal(det.score(ts[400:], v[400:]), back.score(ts[400:], v[400:]))


def test_a_knn_model_saved_before_episodes_restores_with_its_old_statistic(
        series: tuple[np.ndarray, np.ndarray]) -> None:
    """`episodes` was added to knn after models were saved: an old record (no such parameter)
    must come back as the plain k-th-neighbour detector it was, not today's default."""
    ts, v = series
    old = make_detector("knn", k=5, episodes=False)
    old.score(ts[:400], v[:400])
    rec = models.detector_record(old)
    legacy = dataclasses.replace(rec, params={k: p for k, p in rec.params.items()
                                              if k != "episodes"})
    assert "episodes" not in legacy.params and make_detector("knn").params()["episodes"]
    back = models.restore_detector(models.loads(models.dumps(legacy)))
    assert back.params()["episodes"] is False
    assert np.array_equal(old.score(ts[400:], v[400:]), back.score(ts[400:], v[400:]))
