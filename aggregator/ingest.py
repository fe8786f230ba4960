"""Ingest: a receive loop that only receives (`receiver.py`), and one writer that decodes,
stores and acks.

    agents ──PUB/Curve──▶ [Receiver thread: SUB.recv → bounded queue] ──▶ [IngestWriter thread]
                                                      decode · identity check · group ~100 ms
                                                      Store.write (one transaction)
                                                      ◀──PUB acks (topic = node)── committed
                                                      checkpoint → checkpointed acks

Identity comes from Curve: the ZAP handler sets each message's `User-Id` to the sender's public
key, and the writer accepts a batch only when that key is (still) authorized and bound to the
batch's `node`. When a key is removed from the allowlist the receiver re-binds its socket, so every
peer re-handshakes and the revoked one is cut off (ZAP alone only checks at connect time).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Literal

import zmq

from legion.aggregator.allowlist import KeyRegistry
from legion.aggregator.commit_budget import CommitBudget
from legion.aggregator.config import AggregatorSettings
from legion.aggregator.fair_inbox import FairInbox
from legion.aggregator.limits import DEFER, SeriesLimits
from legion.aggregator.live_feed import LiveFeed
from legion.aggregator.receiver import Frame, Inbound, heartbeat_ms
from legion.aggregator.store import IncomingBatch, Store
from legion.aggregator.store.health import is_checkpoint_busy
from legion.aggregator.telemetry import IngestTelemetry
from legion.kernel.curve import server_socket
from legion.proto import (
    ACK_CHECKPOINTED,
    ACK_COMMITTED,
    ACK_REJECTED,
    KIND_ACK,
    KIND_METRICS,
    Ack,
    Envelope,
    MetricsBatch,
    Reason,
    WireError,
    decode,
    encode,
)
from legion.proto.codec import peek_header

log = logging.getLogger("legion.aggregator.ingest")

AGGREGATOR_NODE = "aggregator"
SELF_METRICS_SECS = 5.0
CHECKPOINT_SECS = 10.0
CHECKPOINT_RETRY_SECS = 0.5
COMMIT_FAIL_LOG_SECS = 10.0
HEAVY_NEW_SERIES = 200
"""A batch that brings at least this many new series is committed after the rest of its group,
in a commit of its own: the other batches' commit is not held by its series creation."""
QUIET_SECS = 0.005
"""A group is committed once nothing more has arrived for this long, if the last commit was at
least `commit_interval_ms` ago: a lone batch (or a burst) is stored at once, not at the end of an
interval, and commits stay at most one per interval."""


def group_wait(now: float, deadline: float, has_group: bool, may_commit_early: float) -> float:
    """How long the writer waits for the next frame of a group (<= 0: commit it now): until the
    group's deadline (one interval after its first batch), and once it holds a batch, only
    `QUIET_SECS` more (not before `may_commit_early`, one interval after the last commit)."""
    if not has_group:
        return deadline - now
    return min(deadline - now, max(0.0, may_commit_early - now) + QUIET_SECS)


def ranges_of(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Compress integers into sorted inclusive (first, last) runs."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return tuple((a, b) for a, b in out)


class IngestWriter(threading.Thread):
    """Decodes, checks identity, writes batches in ~commit_interval groups, publishes acks."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[Any]], config: AggregatorSettings,
                 keypair: tuple[bytes, bytes], registry: KeyRegistry,
                 inbox: queue.Queue[Inbound], store: Store, telemetry: IngestTelemetry):
        super().__init__(name="legion-ingest-writer", daemon=True)
        self._ctx, self._cfg, self._keypair = ctx, config, keypair
        self._registry, self._in, self._store, self._tm = registry, inbox, store, telemetry
        self._fair: FairInbox[Inbound] = FairInbox(inbox)  # one sender at a time
        self._next_fail_log = 0.0
        self._stopping = threading.Event()
        self._ack_seq = 0
        self._epoch = int(time.time() * 1000)
        self._self_seq = 0
        # (node, epoch) -> seqs committed since the last checkpoint: not yet safe to free.
        self._uncheckpointed: dict[tuple[str, int], set[int]] = defaultdict(set)
        agg = config.aggregator
        self.limits = SeriesLimits(agg.max_series_per_node, agg.max_series_per_metric,
                                   store.has_series, store.series_counts())
        self.budget = CommitBudget(agg.commit_interval_ms / 1000)
        self.live = LiveFeed()  # agents' batches as accepted, for the gateway's live stream
        self.ready = threading.Event()
        self.bind_error: Exception | None = None

    def run(self) -> None:
        acks = server_socket(self._ctx, zmq.PUB, self._keypair, heartbeat_ms(self._cfg))
        try:
            acks.setsockopt(zmq.SNDHWM, 100_000)
            acks.bind(self._cfg.aggregator.ack_bind)
        except zmq.ZMQError as exc:
            acks.close(linger=0)  # else the context's term() waits for it forever
            self.bind_error = exc
            self.ready.set()
            return
        self._acks = acks
        self.ready.set()
        interval = self._cfg.aggregator.commit_interval_ms / 1000
        max_points = self._cfg.aggregator.commit_max_points
        next_self = time.monotonic() + SELF_METRICS_SECS
        next_ckpt = time.monotonic() + CHECKPOINT_SECS
        may_commit_early = 0.0  # the monotonic time from which a quiet group is committed
        try:
            while not self._stopping.is_set() or not self._fair.empty():
                rejected_acks: dict[tuple[str, int], set[int]] = defaultdict(set)
                group, heavy, heavy_new = self._collect(interval, max_points, rejected_acks,
                                                        may_commit_early)
                self._tm.set(queue_depth=self._fair.qsize())
                now = time.monotonic()
                if now >= next_self:
                    next_self = now + SELF_METRICS_SECS
                    group.append(self._self_batch())
                # Batches that bring many new series go last, in a commit of their own: the
                # rest of the group (other nodes' batches) is acked without waiting for them.
                stored = True
                if group:
                    stored = self._commit(group, self.limits.pending - heavy_new)
                if heavy:
                    stored = self._commit(heavy, heavy_new)
                if group or heavy:
                    self.limits.settle(stored=stored)
                    may_commit_early = time.monotonic() + interval
                for (node, epoch), seqs in rejected_acks.items():
                    if self._note_rejected(node, epoch, seqs):  # stored first, then acked
                        self._publish(node, Ack(ACK_REJECTED, epoch, ranges_of(seqs)))
                if now >= next_ckpt:  # a deferred checkpoint is retried soon, not in 10 s
                    done = self.checkpoint()
                    next_ckpt = now + (CHECKPOINT_SECS if done else CHECKPOINT_RETRY_SECS)
        finally:
            for _ in range(50):  # readers finish within moments; never wait unbounded
                if self.checkpoint():
                    break
                time.sleep(CHECKPOINT_RETRY_SECS / 5)
            acks.close(linger=200)

    def _collect(self, interval: float, max_points: int,
                 rejected_acks: dict[tuple[str, int], set[int]],
                 may_commit_early: float) -> tuple[list[IncomingBatch], list[IncomingBatch], int]:
        """One commit group, taken round-robin per sender until `deadline` or `max_points`:
        (batches, batches that bring `HEAVY_NEW_SERIES` or more new series each, how many new
        series those bring).

        New series cost most of a commit, so a group holds at most the budget's cap of them
        (about half an interval of work): the sender that fills it, or whose batch would pass
        it (that batch waits for the next group), is done for this group. Then the group takes,
        at once, what the other senders already have waiting (a batch without new series always
        fits) and closes (at the deadline at the latest), so a quiet node's batches go into the
        next commit whatever another node floods. A group waits at most one interval after its
        first batch, and once it holds one, only until the inbox is quiet (`group_wait`)."""
        group: list[IncomingBatch] = []
        heavy: list[IncomingBatch] = []
        points, cap, heavy_new = 0, self.budget.cap(), 0
        done: set[object] = set()  # senders whose turn in this group is over
        deadline = time.monotonic() + interval
        while points < max_points:
            left = group_wait(time.monotonic(), deadline, bool(group), may_commit_early)
            if left <= 0:
                break
            timeout = 0.0 if done else left
            try:
                frame = self._fair.get(timeout=timeout, skip=done)
            except queue.Empty:
                break
            before = self.limits.pending
            item = self._accept(frame, rejected_acks, cap)
            if item == DEFER:
                self._fair.put_back(frame)
                self.budget.deferred += 1
                done.add(FairInbox.key_of(frame))
            elif isinstance(item, IncomingBatch):
                if not group and not heavy:  # a batch waits at most one interval for its commit
                    deadline = time.monotonic() + interval
                brought = self.limits.pending - before
                if brought >= HEAVY_NEW_SERIES:
                    heavy.append(item)
                    heavy_new += brought
                else:
                    group.append(item)
                if isinstance(frame, Frame):  # an agent's batch: live before it is durable
                    self.live.publish(item)
                points += len(item.batch)
                if self.limits.pending >= cap > before:  # this batch filled the group
                    done.add(FairInbox.key_of(frame))
        return group, heavy, heavy_new

    def _accept(self, frame: Inbound,
                rejected_acks: dict[tuple[str, int], set[int]], room: int
                ) -> IncomingBatch | Literal["defer"] | None:
        if isinstance(frame, IncomingBatch):  # produced inside the aggregator (analytics)
            return frame
        node = self._registry.node_for(frame.sender)
        if node is None:
            self._tm.reject(Reason.UNKNOWN_KEY.value)
            return None
        if frame.size > self._cfg.aggregator.max_message_bytes:
            self._tm.reject(Reason.FRAME_TOO_LARGE.value)
            head = peek_header(frame.data)
            log.warning("event=frame_too_large node=%s bytes=%d max=%d seq=%s", node,
                        frame.size, self._cfg.aggregator.max_message_bytes,
                        head[3] if head else "?")
            if head and head[0] == KIND_METRICS and head[1] == node:
                rejected_acks[(node, head[2])].add(head[3])
            return None
        try:
            env = decode(frame.data)
        except WireError as exc:
            self._tm.reject(exc.reason.value)
            if exc.header and exc.header[0] == KIND_METRICS and exc.header[1] == node:
                rejected_acks[(node, exc.header[2])].add(exc.header[3])
            return None
        if env.node != node:
            self._tm.reject(Reason.NODE_MISMATCH.value)
            log.warning("event=node_mismatch key_node=%s claimed=%s", node, env.node)
            return None
        if env.kind != KIND_METRICS:
            self._tm.reject(Reason.UNKNOWN_KIND.value)
            return None
        assert isinstance(env.body, MetricsBatch)
        limited = self.limits.admit(node, env.body, room)
        if limited == DEFER:
            return DEFER
        if limited is not None:  # rejected whole, acked so the agent stops resending it
            self._tm.reject(limited.value)
            rejected_acks[(node, env.epoch)].add(env.seq)
            return None
        if len(env.body):
            lag = frame.received_ms / 1000 - float(env.body.ts_ms.max()) / 1000
            self._tm.set(ingest_lag_seconds=max(0.0, lag))
        return IncomingBatch(env.node, env.epoch, env.seq, env.body, frame.received_ms)

    def _commit(self, group: list[IncomingBatch], new_series: int) -> bool:
        """Store one group (`new_series`: how many series it creates, for the budget) and ack
        it; False when the commit failed (nothing acked: the agents resend)."""
        t0 = time.perf_counter()
        try:
            result = self._store.write(group)
        except Exception as exc:  # noqa: BLE001 - a failed commit must not kill ingest
            self._tm.add(commit_errors=1)
            now = time.monotonic()
            if now >= self._next_fail_log:  # a full disk fails every commit: rate-limited
                self._next_fail_log = now + COMMIT_FAIL_LOG_SECS
                log.error("event=commit_failed batches=%d errors_total=%d error=%s", len(group),
                          self._tm.snapshot()["commit_errors"], str(exc).splitlines()[0])
            return False  # nothing acked: agents resend; the store keeps nothing half-written
        dt = time.perf_counter() - t0
        self.budget.observe(dt, new_series)
        self._tm.add(commits=1, commit_seconds_total=dt, batches_accepted=len(result.stored),
                     points_accepted=result.points, batches_duplicate=len(result.duplicates))
        self._tm.set(commit_seconds_last=dt)
        committed: dict[tuple[str, int], set[int]] = defaultdict(set)
        checkpointed: dict[tuple[str, int], set[int]] = defaultdict(set)
        for node, epoch, seq in result.stored:
            if node != AGGREGATOR_NODE:  # no one waits for a checkpointed ack of its own batches
                self._uncheckpointed[(node, epoch)].add(seq)
            committed[(node, epoch)].add(seq)
        for node, epoch, seq in result.duplicates:
            if seq in self._uncheckpointed.get((node, epoch), ()):
                committed[(node, epoch)].add(seq)
            else:
                checkpointed[(node, epoch)].add(seq)
        for (node, epoch), seqs in committed.items():
            if node != AGGREGATOR_NODE:
                self._publish(node, Ack(ACK_COMMITTED, epoch, ranges_of(seqs)))
        for (node, epoch), seqs in checkpointed.items():
            self._publish(node, Ack(ACK_CHECKPOINTED, epoch, ranges_of(seqs)))
        return True

    def _note_rejected(self, node: str, epoch: int, seqs: set[int]) -> bool:
        """Store seqs about to be acked `rejected`; False (no ack: the agent resends, and is
        refused again) when the store cannot write them."""
        try:
            self._store.note_rejected(node, epoch, seqs)
        except Exception as exc:  # noqa: BLE001 - a failed write must not kill ingest
            self._tm.add(commit_errors=1)
            log.warning("event=rejected_not_recorded node=%s seqs=%d error=%s", node, len(seqs),
                        str(exc).splitlines()[0])
            return False
        return True

    def checkpoint(self) -> bool:
        """Checkpoint the database, then tell agents which batches they may free; False when
        it has to be tried again (a query held a transaction open: not an error)."""
        if not self._uncheckpointed:
            return True
        try:
            self._store.checkpoint()
        except Exception as exc:  # noqa: BLE001
            if is_checkpoint_busy(exc):
                self._tm.add(checkpoint_retries=1)
                log.debug("event=checkpoint_deferred reason=transactions_active")
                return False
            log.error("event=checkpoint_failed error=%s", exc)
            return False
        self._tm.add(checkpoints=1)
        done, self._uncheckpointed = self._uncheckpointed, defaultdict(set)
        for (node, epoch), seqs in done.items():
            self._publish(node, Ack(ACK_CHECKPOINTED, epoch, ranges_of(seqs)))
        return True

    def _publish(self, node: str, ack: Ack) -> None:
        self._ack_seq += 1
        env = Envelope(KIND_ACK, node, self._epoch, self._ack_seq, int(time.time() * 1000), ack)
        self._acks.send_multipart([node.encode() + b"\0", encode(env)])
        self._tm.add(acks_sent=1)

    def _self_batch(self) -> IncomingBatch:
        self._self_seq += 1
        now = int(time.time() * 1000)
        batch = MetricsBatch.from_samples(self._tm.samples(now))
        return IncomingBatch(AGGREGATOR_NODE, self._epoch, self._self_seq, batch, now)

    def stop(self) -> None:
        """Finish the current group, checkpoint, and end (idempotent)."""
        self._stopping.set()
