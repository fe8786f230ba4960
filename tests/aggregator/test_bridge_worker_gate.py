"""The analytics bridge sends nothing while no worker is connected (issue 17: idle cost), and
jobs reach a worker as soon as one connects, including the jobs made before it came.

Real parts: the bridge thread with its Curve PUSH/PULL servers on loopback, a real Store with
watched series, and a real `Worker` thread on Curve client sockets.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from legion.aggregator.analytics_bridge.bridge import AnalyticsBridge, worker_connected
from legion.aggregator.store import IncomingBatch, Store
from legion.analytics.worker import Worker
from legion.cli.config import load_config
from legion.kernel.curve import load_secret
from legion.proto import MetricsBatch, Sample
from tests.conftest import make_setup, wait_for


def _store_with_history(path: Path) -> Store:
    store = Store(str(path))
    now = int(time.time() * 1000)
    ts = now - 1000 * np.arange(120, 0, -1)
    samples = [Sample("system_memory_usage_percent", (), float(40 + (i % 7)), int(t))
               for i, t in enumerate(ts)]
    store.write([IncomingBatch("web-1", 1, 1, MetricsBatch.from_samples(samples), now)])
    return store


def test_worker_connected_follows_curve_peers(tmp_path: Path) -> None:
    """A PUSH server is writable only once a worker finished its handshake, and not after the
    worker left."""
    ctx = zmq.Context()
    server = zmq.curve_keypair()
    push = ctx.socket(zmq.PUSH)
    push.curve_publickey, push.curve_secretkey = server
    push.curve_server = True
    push.setsockopt(zmq.LINGER, 0)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    try:
        assert not worker_connected(push)
        pull = ctx.socket(zmq.PULL)
        pull.curve_publickey, pull.curve_secretkey = zmq.curve_keypair()
        pull.curve_serverkey = server[0]
        pull.setsockopt(zmq.LINGER, 0)
        pull.connect(f"tcp://127.0.0.1:{port}")
        wait_for(lambda: worker_connected(push), timeout=30, interval=0.05)
        pull.close(0)
        wait_for(lambda: not worker_connected(push), timeout=30, interval=0.05)
    finally:
        push.close(0)
        ctx.term()


@pytest.mark.parametrize("step", [0, 1])  # raw points; 1 s bucket maxima (bucketed.py)
def test_no_jobs_without_a_worker_then_jobs_reach_one(tmp_path: Path, step: int) -> None:
    cfg_path = make_setup(tmp_path / "legion", analysis_interval=0.2,
                          analytics={"job_timeout_secs": 2.0, "window_size": 40,
                                     "detect_step_secs": step})
    config = load_config(cfg_path)
    keypair = load_secret(Path(config.aggregator.secret_key_path))
    store = _store_with_history(tmp_path / "x.duckdb")
    ctx = zmq.Context()
    bridge = AnalyticsBridge(ctx, config, keypair, store, lambda batch: None)
    worker = None
    try:
        bridge.start()
        bridge.ready.wait(10)
        assert bridge.bind_error is None
        # Passes come and go with nobody to take a job: nothing is read, sent or given up.
        wait_for(lambda: bridge.counters.passes_without_worker >= 5, timeout=60)
        st = bridge.stats()
        assert st["sent"] == 0 and st["given_up"] == 0
        assert st["scheduling"]["series_read"] == 0
        assert st["scheduling"].get("stepped_reads", 0) == 0

        worker = Worker(config.analytics.jobs_bind, config.analytics.results_bind, keypair[0],
                        zmq.curve_keypair(), name="w1", ctx=ctx, poll_ms=50)
        worker.start()
        after = wait_for(lambda: (s := bridge.stats())["results"] >= 1 and s, timeout=90)
        assert after["sent"] >= 1 and after["failed"] == 0
        assert after["by_worker"] == {"w1": after["results"]}
    finally:
        if worker is not None:
            worker.stop()
        bridge.stop()
        bridge.join(10)
        store.close()
        ctx.term()


def test_an_idle_bridge_sleeps_until_a_pass_is_due_and_stop_wakes_it(tmp_path: Path) -> None:
    """Without a worker the loop wakes only for due passes (here 10 minutes away), not every
    0.5 s; `stop` wakes it at once all the same."""
    cfg_path = make_setup(tmp_path / "legion", analysis_interval=600.0)
    config = load_config(cfg_path)
    keypair = load_secret(Path(config.aggregator.secret_key_path))
    store = _store_with_history(tmp_path / "x.duckdb")
    ctx = zmq.Context()
    bridge = AnalyticsBridge(ctx, config, keypair, store, lambda batch: None)
    try:
        bridge.start()
        assert bridge.ready.wait(10) and bridge.bind_error is None
        wait_for(lambda: bridge.counters.wakeups >= 1, timeout=30)  # the first pass is done
        woke = bridge.counters.wakeups
        time.sleep(3.0)  # polling every 0.5 s would wake it ~6 times
        assert bridge.counters.wakeups - woke <= 1
        bridge.stop()
        bridge.join(20)  # far less than the sleep it was in: woken
        assert not bridge.is_alive()
    finally:
        bridge.stop()
        bridge.join(70)
        store.close()
        ctx.term()
