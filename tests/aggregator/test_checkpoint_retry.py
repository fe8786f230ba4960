"""Checkpoints under query load: a checkpoint that meets another transaction is retried soon,
not logged as an error, and every batch still gets its `checkpointed` ack. Real aggregator, real
Curve sockets, real DuckDB, real concurrent queries."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from legion.aggregator import ingest
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from tests.aggregator.curve_peer import aggregator_with_peers, series_batch
from tests.conftest import make_setup, wait_for


def test_checkpoints_meeting_queries_are_retried_not_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ingest, "CHECKPOINT_SECS", 0.3)  # many attempts while queries run
    cfg = load_config(make_setup(tmp_path / "legion"))
    add_agent_key(cfg, "busy")
    stop = threading.Event()
    reads = [0]
    caplog.set_level(logging.DEBUG, logger="legion.aggregator")
    with aggregator_with_peers(cfg, "busy") as (agg, [peer]):

        def reader() -> None:  # what the gateway does all day: stepped queries and stats
            while not stop.is_set():
                agg.store.query("busy_value", step_ms=60_000, since_ms=0)
                agg.store.query("busy_value")
                agg.store.stats()
                reads[0] += 1

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
        try:
            for t in threads:
                t.start()
            last = 60
            for seq in range(2, last + 1):
                peer.send(seq, series_batch("busy_value", 0, 200))
                peer.pump(50)
            wait_for(lambda: (peer.pump(100),
                              set(range(1, last + 1)) <= set(peer.acks["checkpointed"]))[1], 120)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    st_errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not st_errors, [r.getMessage() for r in st_errors]
    print(f"reads {reads[0]}, checkpoint retries "
          f"{agg.telemetry.snapshot()['checkpoint_retries']}, "
          f"checkpoints {agg.telemetry.snapshot()['checkpoints']}")
    assert reads[0] > 0 and agg.telemetry.snapshot()["checkpoints"] >= 1


def test_the_aggregators_own_batches_ask_for_no_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle aggregator commits its self-metrics every few seconds; nobody waits for their
    `checkpointed` ack, so they must not make the writer checkpoint. An agent's batch still
    does."""
    monkeypatch.setattr(ingest, "SELF_METRICS_SECS", 0.2)
    monkeypatch.setattr(ingest, "CHECKPOINT_SECS", 0.3)
    cfg = load_config(make_setup(tmp_path / "legion"))
    add_agent_key(cfg, "late")
    with aggregator_with_peers(cfg) as (idle, _):
        wait_for(lambda: idle.telemetry.snapshot()["commits"] >= 5, 60)
        assert idle.telemetry.snapshot()["checkpoints"] == 0
    with aggregator_with_peers(cfg, "late") as (agg, [peer]):
        peer.send(2, series_batch("late_value", 0, 10))
        wait_for(lambda: (peer.pump(100), 2 in set(peer.acks["checkpointed"]))[1], 60)
        assert agg.telemetry.snapshot()["checkpoints"] >= 1
