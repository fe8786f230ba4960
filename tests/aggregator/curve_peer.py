"""A bare agent for ingest tests: real Curve PUB to the aggregator, real ack SUB, no spool."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import zmq

from legion.aggregator.service import Aggregator
from legion.cli.config import Config
from legion.cli.setup_cmds import add_agent_key
from legion.kernel.curve import client_socket, load_public, load_secret
from legion.proto import Envelope, MetricsBatch, Sample, decode, encode


def series_batch(name: str, first: int, n: int, ts_ms: int | None = None) -> MetricsBatch:
    """One point each for `n` series `name{id=first..first+n-1}`."""
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    return MetricsBatch((name,), tuple((("id", str(first + i)),) for i in range(n)),
                        np.zeros(n, np.uint32), np.arange(n, dtype=np.uint32), np.ones(n),
                        np.full(n, ts, np.int64))


class CurvePeer:
    """Sends frames as `node` (its key from the setup) and collects the acks addressed to it."""

    def __init__(self, ctx: zmq.Context, cfg: Config, node: str) -> None:
        self.node = node
        server = load_public(cfg.path(cfg.agent.server_public_key_path))
        keys = load_secret(cfg.path(cfg.agent.keys_dir) / f"{node}.key_secret")
        self.pub = client_socket(ctx, zmq.PUB, server, keys)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.pub.connect(cfg.agent.aggregator_endpoint)
        self.sub = client_socket(ctx, zmq.SUB, server, keys)
        self.sub.setsockopt(zmq.SUBSCRIBE, node.encode() + b"\0")
        self.sub.connect(cfg.agent.ack_endpoint)
        self.acks: dict[str, dict[int, float]] = defaultdict(dict)  # level -> seq -> when
        self.sent: dict[int, float] = {}

    def send(self, seq: int, batch: MetricsBatch, epoch: int = 1) -> None:
        """Send one metrics envelope."""
        self.sent[seq] = time.monotonic()
        self.send_raw(encode(Envelope("metrics", self.node, epoch, seq,
                                      int(time.time() * 1000), batch)))

    def connect(self, timeout: float = 30.0) -> None:
        """Send seq 1 (one point of `probe_value`) until it is acked: both sockets are up."""
        deadline = time.monotonic() + timeout
        while not any(1 in seqs for seqs in self.acks.values()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.node}: no ack for the probe batch in {timeout}s")
            self.send(1, MetricsBatch.from_samples([Sample("probe_value", (), 1.0,
                                                           int(time.time() * 1000))]))
            self.pump(300)

    def send_raw(self, frame: bytes) -> None:
        """Send bytes as they are."""
        self.pub.send(frame)

    def pump(self, timeout_ms: int = 50) -> None:
        """Collect whatever acks arrived within `timeout_ms`."""
        if not self.sub.poll(timeout_ms):
            return
        while True:
            try:
                _, frame = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            env = decode(frame)
            body: Any = env.body
            now = time.monotonic()
            for lo, hi in body.ranges:
                for s in range(lo, hi + 1):
                    self.acks[body.level].setdefault(s, now)

    def answered(self) -> set[int]:
        """Seqs acked committed or rejected."""
        return set(self.acks["committed"]) | set(self.acks["rejected"])

    def close(self) -> None:
        """Close both sockets."""
        self.pub.close(linger=0)
        self.sub.close(linger=0)


@contextlib.contextmanager
def aggregator_with_peers(cfg: Config, *nodes: str) -> Iterator[tuple[Aggregator,
                                                                      list[CurvePeer]]]:
    """A running aggregator and one connected peer per node (their keys already authorized);
    peers, aggregator and sockets are closed on the way out."""
    agg = Aggregator(cfg.aggregator_settings())
    agg.start()
    ctx = zmq.Context()
    peers = [CurvePeer(ctx, cfg, node) for node in nodes]
    try:
        for peer in peers:
            peer.connect()
        yield agg, peers
    finally:
        for peer in peers:
            peer.close()
        agg.stop()
        ctx.term()


@contextlib.contextmanager
def flood_and_quiet(cfg: Config) -> Iterator[tuple[Aggregator, CurvePeer, CurvePeer]]:
    """A running aggregator and two connected peers, `flood` and `quiet` (keys added here)."""
    for node in ("flood", "quiet"):
        add_agent_key(cfg, node)
    with aggregator_with_peers(cfg, "flood", "quiet") as (agg, (flood, quiet)):
        yield agg, flood, quiet
