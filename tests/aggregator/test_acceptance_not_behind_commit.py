"""Acceptance never waits for DuckDB: while a commit is held, later batches are still decoded,
admitted, deduplicated and streamed live; a full queue to the writer makes the receiver stop
reading (ZeroMQ and the agents keep the rest) and nothing accepted is lost.

Real: the aggregator's threads, its DuckDB file and Curve peers on loopback. The hold is a lock
in front of the store writer's real transaction (the wrapper only waits on an event, then runs
it), so a commit takes as long as the test says.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import zmq

from legion.aggregator.service import Aggregator
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.proto import ACK_COMMITTED, MetricsBatch, Sample
from tests.aggregator.curve_peer import CurvePeer
from tests.conftest import make_setup, wait_for


class HeldCommits:
    """Holds every transaction of the store writer until `release` is set."""

    def __init__(self, writer: Any) -> None:
        self._real = writer._transaction
        self.entered = threading.Event()
        self.release = threading.Event()
        writer._transaction = self.transaction

    def transaction(self, *args: Any) -> None:
        self.entered.set()
        self.release.wait(120)  # bounded: a failing test still ends
        self._real(*args)


def one_point(value: float) -> MetricsBatch:
    return MetricsBatch.from_samples([Sample("system_cpu_usage_percent", (), value,
                                             int(time.time() * 1000))])


def until_committed(peer: CurvePeer, seqs: set[int], timeout: float = 60) -> None:
    """Read acks until every seq in `seqs` is acked committed (nothing is resent)."""
    deadline = time.monotonic() + timeout
    while not seqs <= set(peer.acks[ACK_COMMITTED]):
        assert time.monotonic() < deadline, seqs - set(peer.acks[ACK_COMMITTED])
        peer.pump(200)


def start(tmp_path: Path, **aggregator: Any) -> tuple[Aggregator, Any]:
    cfg = load_config(make_setup(tmp_path / "legion", aggregator=aggregator))
    add_agent_key(cfg, "web-1")
    agg = Aggregator(cfg.aggregator_settings())
    agg.start()
    return agg, cfg


def test_a_batch_streams_and_dedups_while_the_commit_before_it_is_held(tmp_path: Path) -> None:
    agg, cfg = start(tmp_path)
    ctx = zmq.Context()
    try:
        peer = CurvePeer(ctx, cfg, "web-1")
        peer.connect()
        assert agg.live_feed is not None
        live: list[int] = []
        agg.live_feed.subscribe(lambda b: live.append(b.seq))
        held = HeldCommits(agg.store._writer)
        try:
            peer.send(2, one_point(1.0))
            assert held.entered.wait(60), "no commit started"
            third = one_point(2.0)
            dups = agg.telemetry.snapshot()["batches_duplicate"]
            peer.send(3, third)
            wait_for(lambda: 3 in live, 60)  # on the live feed while the commit is held
            peer.send(3, third)  # an agent's resend of a batch still in flight: dropped
            wait_for(lambda: agg.telemetry.snapshot()["batches_duplicate"] == dups + 1, 60)
            assert not held.release.is_set()
            peer.pump(200)
            assert 3 not in peer.acks[ACK_COMMITTED]  # acked only after its commit
        finally:
            held.release.set()
        until_committed(peer, {2, 3})
        assert live.count(3) == 1
        assert agg.store.stored_ranges("web-1", 1) == [(1, 3)]
        assert agg.telemetry.snapshot()["batches_accepted"] >= 3
    finally:
        agg.stop()
        ctx.destroy(linger=0)


def test_a_full_queue_stops_the_receiver_reading_and_nothing_is_lost(tmp_path: Path) -> None:
    room = 4
    agg, cfg = start(tmp_path, queue_max_batches=room)
    ctx = zmq.Context()
    try:
        peer = CurvePeer(ctx, cfg, "web-1")
        peer.connect()
        held = HeldCommits(agg.store._writer)
        try:
            peer.send(2, one_point(0.0))
            assert held.entered.wait(60), "no commit started"
            received = agg.telemetry.snapshot()["frames_received"]
            for seq in range(3, 43):
                peer.send(seq, one_point(float(seq)))
            # The receiver waits on the full queue again and again: it has stopped reading.
            wait_for(lambda: agg.telemetry.snapshot()["queue_full_waits"] >= 3, 60)
            read = agg.telemetry.snapshot()["frames_received"] - received
            assert read <= room + 1, read  # the queue's room and the one frame in hand
        finally:
            held.release.set()
        until_committed(peer, set(range(2, 43)))  # each sent once: none was dropped
        assert agg.store.stored_ranges("web-1", 1) == [(1, 42)]
    finally:
        agg.stop()
        ctx.destroy(linger=0)
