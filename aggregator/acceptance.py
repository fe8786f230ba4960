"""Acceptance: everything ingest decides about a frame before storing it, on the receiving side.

Decode, authenticate by key (the frame's Curve key must be bound to the batch's node), admit
against the series limits, drop a copy of a batch still waiting for its commit, and publish the
batch to the live feed. The receiver thread calls `accept` as it reads each frame, so none of
this waits for DuckDB: the writer only commits what it is handed, then acks
(docs/internals.md, "The live path").

Refusals are counted here (`frames_rejected_total{reason}`); those an agent must hear about go
to the writer as `Refused` (recorded in the store, then acked `rejected`). A resent copy of a
batch in flight (accepted, not yet committed: an agent resends when a commit is slow) is
counted `batches_duplicate` and dropped; its first copy's ack answers both. After each commit
the writer calls `settle`: the batches leave the in-flight set, and the series a failed commit
held are given back to the limits (the agents resend, and are accepted again).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from legion.aggregator.allowlist import KeyRegistry
from legion.aggregator.config import AggregatorSettings
from legion.aggregator.inbound import Accepted, Frame, Refused
from legion.aggregator.limits import SeriesLimits
from legion.aggregator.live_feed import LiveFeed
from legion.aggregator.store import IncomingBatch
from legion.aggregator.telemetry import IngestTelemetry
from legion.proto import KIND_METRICS, MetricsBatch, Reason, WireError, decode
from legion.proto.codec import peek_header

log = logging.getLogger("legion.aggregator.ingest")


class Acceptor:
    """Turns frames into `Accepted` batches or `Refused` ones (or None: dropped, counted)."""

    def __init__(self, registry: KeyRegistry, config: AggregatorSettings,
                 limits: SeriesLimits, live: LiveFeed, telemetry: IngestTelemetry) -> None:
        self._registry, self._max_bytes = registry, config.aggregator.max_message_bytes
        self.limits, self.live, self._tm = limits, live, telemetry
        self._lock = threading.Lock()  # the in-flight set: accept and settle run on two threads
        self._in_flight: set[tuple[str, int, int]] = set()  # (node, epoch, seq) accepted

    def accept(self, frame: Frame) -> Accepted | Refused | None:
        """Decide about one frame; an accepted agent batch is published live at once."""
        node = self._registry.node_for(frame.sender)
        if node is None:
            self._tm.reject(Reason.UNKNOWN_KEY.value)
            return None
        if frame.size > self._max_bytes:
            self._tm.reject(Reason.FRAME_TOO_LARGE.value)
            head = peek_header(frame.data)
            log.warning("event=frame_too_large node=%s bytes=%d max=%d seq=%s", node,
                        frame.size, self._max_bytes, head[3] if head else "?")
            if head and head[0] == KIND_METRICS and head[1] == node:
                return Refused(node, head[2], head[3], frame.sender)
            return None
        try:
            env = decode(frame.data)
        except WireError as exc:
            self._tm.reject(exc.reason.value)
            if exc.header and exc.header[0] == KIND_METRICS and exc.header[1] == node:
                return Refused(node, exc.header[2], exc.header[3], frame.sender)
            return None
        if env.node != node:
            self._tm.reject(Reason.NODE_MISMATCH.value)
            log.warning("event=node_mismatch key_node=%s claimed=%s", node, env.node)
            return None
        if env.kind != KIND_METRICS:
            self._tm.reject(Reason.UNKNOWN_KIND.value)
            return None
        assert isinstance(env.body, MetricsBatch)
        key = (node, env.epoch, env.seq)
        with self._lock:
            if key in self._in_flight:
                self._tm.add(batches_duplicate=1)
                return None
            admitted = self.limits.admit(node, env.body)
            if isinstance(admitted, Reason):  # rejected whole, acked so the agent stops resending
                self._tm.reject(admitted.value)
                return Refused(node, env.epoch, env.seq, frame.sender)
            self._in_flight.add(key)
        if len(env.body):
            lag = frame.received_ms / 1000 - float(env.body.ts_ms.max()) / 1000
            self._tm.set(ingest_lag_seconds=max(0.0, lag))
        batch = IncomingBatch(env.node, env.epoch, env.seq, env.body, frame.received_ms)
        self.live.publish(batch)  # live before it is durable
        return Accepted(batch, frame.sender, admitted)

    def settle(self, items: Iterable[Accepted], stored: bool) -> None:
        """After the commit that held `items`: they are no longer in flight, and when it
        failed the series they brought are given back to the limits."""
        with self._lock:
            for item in items:
                b = item.batch
                self._in_flight.discard((b.node, b.epoch, b.seq))
                self.limits.settle(item.new_series, stored)

    def in_flight(self) -> int:
        """Batches accepted and not yet settled by a commit."""
        return len(self._in_flight)
