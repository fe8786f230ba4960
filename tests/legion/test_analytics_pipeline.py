"""The analytics pool end to end: aggregator → jobs over Curve → workers → scores stored.

Real processes: aggregator, node agent, worker pool (killed with SIGKILL and restarted).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from legion.aggregator.analytics_bridge.bucketed import SETTLE_MS
from legion.aggregator.store import IncomingBatch, Store
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.proto import MetricsBatch, Sample
from tests.conftest import LEGIONCTL, make_setup, wait_for

pytestmark = pytest.mark.timeout(240)


def status(cfg: Path) -> dict:
    out = subprocess.run(LEGIONCTL + ["status", "--config", str(cfg), "--format", "json"],
                         capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def test_jobs_scored_stored_and_redispatched_after_worker_kill(tmp_path: Path, procs) -> None:
    cfg_path = make_setup(tmp_path / "legion", collection_interval=0.5, analysis_interval=1.0,
                          # 1 s buckets: the bucketed read path end to end in a test's minutes
                          # (at the default 300 s a first model needs 50 buckets, over 4 h)
                          analytics={"job_timeout_secs": 3.0, "window_size": 40,
                                     "detect_step_secs": 1},
                          # jobs follow commits: gathered commits (every 3 s at one agent) can
                          # leave the 3 s freeze below without a job in flight to resend
                          aggregator={"commit_max_delay_ms": 0})
    add_agent_key(load_config(cfg_path), "n1")
    procs("aggregator", "run", "--config", str(cfg_path), name="agg")
    procs("agent", "run", "--config", str(cfg_path), "--node", "n1", name="n1")
    pool = procs("analytics", "run", "--config", str(cfg_path), "--workers", "1", name="pool")

    first = wait_for(lambda: (status(cfg_path).get("analytics") or {}).get("results", 0) >= 3
                     and status(cfg_path)["analytics"], timeout=90, interval=1)
    assert first["failed"] == 0
    rows = json.loads(subprocess.run(
        LEGIONCTL + ["query", "legion_anomaly_score", "--since", "5m", "--config",
                     str(cfg_path), "--format", "json"],
        capture_output=True, text=True, timeout=30).stdout)
    assert rows and all(0.0 <= r["value"] <= 1.0 for r in rows)
    assert {r["labels"]["node"] for r in rows} == {"n1"}

    # Frozen, the worker keeps its connection, so jobs still go to it and are never answered;
    # killed, it takes them along: they wait for their timeout, then go out again. (Without a
    # worker connected at all the bridge sends nothing, so freezing is what puts jobs in flight.)
    os.killpg(pool.p.pid, signal.SIGSTOP)
    time.sleep(3)
    pool.kill9()
    time.sleep(5)
    procs("analytics", "run", "--config", str(cfg_path), "--workers", "1", name="pool2")
    after = wait_for(lambda: (s := status(cfg_path).get("analytics") or {}) and
                     s.get("resent", 0) >= 1 and
                     s.get("results", 0) > first["results"] + 3 and s, timeout=90, interval=1)
    assert after["failed"] == 0

    ranked = json.loads(subprocess.run(
        LEGIONCTL + ["anomalies", "--since", "10m", "--config", str(cfg_path), "--format",
                     "json"], capture_output=True, text=True, timeout=30).stdout)
    assert ranked and all({"node", "metric", "anomaly_rate", "max_score"} <= set(r)
                          for r in ranked)
    assert ranked == sorted(ranked, key=lambda r: (r["anomaly_rate"], r["max_score"]),
                            reverse=True)

    retrain = subprocess.run(LEGIONCTL + ["analytics", "retrain", "--config", str(cfg_path)],
                             capture_output=True, text=True, timeout=30)
    assert retrain.returncode == 0, retrain.stderr
    assert "retrain requested for all" in retrain.stdout


def test_the_default_step_scores_five_minute_maxima_of_stored_history(tmp_path: Path,
                                                                       procs) -> None:
    """An aggregator with the default `detect_step_secs` (300) and a store that already holds
    five hours of a host's 1 s points (an aggregator restarted on its data, a host added with
    its past): the first pass reads that history as 5-minute maxima and the worker scores the
    newest 30 buckets at once, each stamped at its bucket's start."""
    cfg_path = make_setup(tmp_path / "legion", analysis_interval=1.0)
    config = load_config(cfg_path)
    assert config.analytics.detect_step_secs == 300  # the default, as `legionctl init` writes it
    add_agent_key(config, "n1")
    step_ms = 300_000
    now = int(time.time() * 1000)
    ts = np.arange(now - 5 * 3600_000, now - 20_000, 1000, dtype=np.int64)
    values = 40 + 5 * np.sin(ts / 3600_000) + np.random.default_rng(0).normal(0, 1, len(ts))
    store = Store(config.storage.db_path)
    try:
        for seq, part in enumerate(np.array_split(np.arange(len(ts)), 10), start=1):
            samples = [Sample("system_memory_usage_percent", (), float(values[i]), int(ts[i]))
                       for i in part]
            store.write([IncomingBatch("n1", 1, seq, MetricsBatch.from_samples(samples),
                                       int(ts[part[-1]]))])
    finally:
        store.close()
    procs("aggregator", "run", "--config", str(cfg_path), name="agg")
    procs("analytics", "run", "--config", str(cfg_path), "--workers", "1", name="pool")

    def scores() -> list[dict]:
        out = subprocess.run(LEGIONCTL + ["query", "legion_anomaly_score", "--since", "6h",
                                          "--config", str(cfg_path), "--format", "json"],
                             capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout) if out.returncode == 0 else []

    rows = wait_for(scores, timeout=90, interval=1)
    seen = int(time.time() * 1000)
    stamps = sorted(r["ts_ms"] for r in rows)
    assert {r["labels"]["metric"] for r in rows} == {"system_memory_usage_percent"}
    assert all(t % step_ms == 0 for t in stamps)
    assert stamps == list(range(stamps[0], stamps[-1] + 1, step_ms)) and len(stamps) == 30
    # Only whole buckets that had ended and settled before the pass, and the newest of those
    # that hold points: the bucket of the last point written, or (when that one had not ended
    # yet) the one before it.
    assert stamps[-1] + step_ms + SETTLE_MS <= seen
    assert stamps[-1] <= ts[-1] < stamps[-1] + 2 * step_ms
