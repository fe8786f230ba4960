"""Without a connected worker the analytics bridge builds no jobs (no store reads for them);
once a worker's Curve handshake is done, jobs flow. Real Curve sockets on loopback, real Store."""

from __future__ import annotations

import time
from pathlib import Path

import zmq

from legion.aggregator.analytics_dispatch import AnalyticsBridge, WorkerCount
from legion.aggregator.store import IncomingBatch, Store
from legion.config import config_from_dict
from legion.proto import MetricsBatch, Sample
from legion.proto.jobs import decode_job
from tests.conftest import free_port, wait_for


def test_worker_count_follows_connects_and_disconnects() -> None:
    ctx = zmq.Context()
    server_pub, server_sec = zmq.curve_keypair()
    push = ctx.socket(zmq.PUSH)
    push.curve_server, push.curve_publickey, push.curve_secretkey = True, server_pub, server_sec
    port = push.bind_to_random_port("tcp://127.0.0.1")
    count = WorkerCount(push)
    pulls: list[zmq.Socket] = []
    try:
        assert count.update() == 0
        for _ in range(2):
            pull = ctx.socket(zmq.PULL)
            pull.curve_serverkey = server_pub
            pull.curve_publickey, pull.curve_secretkey = zmq.curve_keypair()
            pull.connect(f"tcp://127.0.0.1:{port}")
            pulls.append(pull)
        wait_for(lambda: count.update() == 2, 20)
        pulls.pop().close(0)
        wait_for(lambda: count.update() == 1, 20)
        assert count.connected == 1
        pulls.pop().close(0)
        wait_for(lambda: count.update() == 0, 20)
    finally:
        for p in pulls:
            p.close(0)
        count.close()
        push.close(0)
        ctx.term()


def test_bridge_schedules_jobs_only_with_a_worker(tmp_path: Path) -> None:
    config = config_from_dict({
        "analysis_interval": 0.2, "collection_interval": 1.0,
        "analytics": {"jobs_bind": f"tcp://127.0.0.1:{free_port()}",
                      "results_bind": f"tcp://127.0.0.1:{free_port()}"}}, base_dir=tmp_path)
    store = Store(tmp_path / "legion.duckdb")
    now = int(time.time() * 1000)
    samples = [Sample("system_memory_usage_percent", (), 40.0 + i % 3, now - (300 - i) * 1000)
               for i in range(300)]
    store.write([IncomingBatch("web-1", 1, 1, MetricsBatch.from_samples(samples), now)])
    ctx = zmq.Context()
    server_pub, server_sec = zmq.curve_keypair()
    bridge = AnalyticsBridge(ctx, config, (server_pub, server_sec), store, lambda b: None)
    bridge.start()
    pull = None
    try:
        assert bridge.ready.wait(10) and bridge.bind_error is None
        time.sleep(1.5)  # 7 analysis intervals with nobody to take a job
        assert bridge.stats()["sent"] == 0
        pull = ctx.socket(zmq.PULL)
        pull.curve_serverkey = server_pub
        pull.curve_publickey, pull.curve_secretkey = zmq.curve_keypair()
        pull.connect(config.endpoint(config.analytics.jobs_bind))
        assert pull.poll(20_000), "no job reached the worker"
        job = decode_job(pull.recv())
        assert job.kind == "detect" and "system_memory_usage_percent" in job.series
        assert bridge.stats()["sent"] >= 1
    finally:
        bridge.stop()
        bridge.join(10)
        if pull is not None:
            pull.close(0)
        ctx.term()
        store.close()
