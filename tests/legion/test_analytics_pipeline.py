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

import pytest

from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
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
