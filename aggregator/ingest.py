"""Ingest: the receiving side accepts (`receiver.py`, `acceptance.py`), one writer commits and
acks.

    agents ──PUB/Curve──▶ [Receiver thread: SUB.recv · decode · identity · limits · dedup
                           · live feed] ──▶ bounded queue ──▶ [IngestWriter thread]
                                                      group ~100 ms, round-robin per node
                                                      Store.write (one transaction)
                                                      ◀──PUB acks (topic = node)── committed
                                                      checkpoint → checkpointed acks

Identity comes from Curve: the ZAP handler sets each message's `User-Id` to the sender's public
key, and a batch is accepted only when that key is (still) authorized and bound to the batch's
`node`. When a key is removed from the allowlist the receiver re-binds its socket, so every
peer re-handshakes and the revoked one is cut off (ZAP alone only checks at connect time).
The writer sleeps on its queue until work arrives or a timer (self-metrics, checkpoint) is due.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from typing import Any

import zmq

from legion.aggregator.acceptance import Acceptor
from legion.aggregator.allowlist import KeyRegistry
from legion.aggregator.commit_budget import CommitBudget
from legion.aggregator.commit_groups import (
    AGGREGATOR_NODE,
    CommitGroups,
    Group,
    gather_wait,
    group_wait,
    ranges_of,
)
from legion.aggregator.config import AggregatorSettings
from legion.aggregator.fair_inbox import FairInbox
from legion.aggregator.inbound import WAKE, Accepted, Frame, Inbound, Refused, Wake
from legion.aggregator.limits import SeriesLimits
from legion.aggregator.live_feed import LiveFeed
from legion.aggregator.receiver import heartbeat_ms
from legion.aggregator.store import IncomingBatch, Store
from legion.aggregator.telemetry import IngestTelemetry
from legion.kernel.curve import server_socket
from legion.proto import (
    ACK_REJECTED,
    KIND_ACK,
    Ack,
    Envelope,
    MetricsBatch,
    encode,
)

log = logging.getLogger("legion.aggregator.ingest")

SELF_METRICS_SECS = 5.0
CHECKPOINT_SECS = 10.0
CHECKPOINT_RETRY_SECS = 0.5
class IngestWriter(threading.Thread):
    """Commits accepted batches in ~commit_interval groups, then acks them; accepts the bare
    frames handed straight to its queue (`acceptor`, shared with the receiver)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[Any]], config: AggregatorSettings,
                 keypair: tuple[bytes, bytes], registry: KeyRegistry,
                 inbox: queue.Queue[Inbound], store: Store, telemetry: IngestTelemetry):
        super().__init__(name="legion-ingest-writer", daemon=True)
        self._ctx, self._cfg, self._keypair = ctx, config, keypair
        self._registry, self._in, self._store, self._tm = registry, inbox, store, telemetry
        self._fair: FairInbox[Inbound] = FairInbox(inbox)  # one sender at a time
        self._stopping = threading.Event()
        self._ack_seq = 0
        self._epoch = int(time.time() * 1000)
        self._self_seq = 0
        agg = config.aggregator
        self.limits = SeriesLimits(agg.max_series_per_node, agg.max_series_per_metric,
                                   store.has_series, store.series_counts())
        self.budget = CommitBudget(agg.commit_interval_ms / 1000)
        self.live = LiveFeed()  # agents' batches as accepted, for the gateway's live stream
        self.acceptor = Acceptor(registry, config, self.limits, self.live, telemetry)
        # A group's life from here on: gathered, fed ahead, committed, acked (commit_groups.py)
        self.groups = CommitGroups(store, self.acceptor, self.budget, telemetry, self._publish,
                                   agg.commit_max_delay_ms / 1000)
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
                seed = None  # the self-metrics open a group: agents' batches join their commit
                if time.monotonic() >= next_self:
                    next_self = time.monotonic() + SELF_METRICS_SECS
                    seed = self._self_batch()
                group, heavy = self._collect(interval, max_points, rejected_acks,
                                             may_commit_early, min(next_self, next_ckpt), seed)
                self._tm.set(queue_depth=self._fair.qsize())
                now = time.monotonic()
                # Batches that bring many new series go last, in a commit of their own: the
                # rest of the group (other nodes' batches) is acked without waiting for them.
                if group.batches:
                    self.groups.commit(group)
                if heavy.batches:
                    self.groups.commit(heavy)
                if group.batches or heavy.batches:
                    may_commit_early = time.monotonic() + interval
                for (node, epoch), seqs in rejected_acks.items():
                    if self._note_rejected(node, epoch, seqs):  # stored first, then acked
                        self._publish(node, Ack(ACK_REJECTED, epoch, ranges_of(seqs)))
                if now >= next_ckpt:  # a deferred checkpoint is retried soon, not in 10 s
                    done = self.groups.checkpoint()
                    next_ckpt = now + (CHECKPOINT_SECS if done else CHECKPOINT_RETRY_SECS)
        finally:
            for _ in range(50):  # readers finish within moments; never wait unbounded
                if self.groups.checkpoint():
                    break
                time.sleep(CHECKPOINT_RETRY_SECS / 5)
            acks.close(linger=200)

    def _collect(self, interval: float, max_points: int,
                 rejected_acks: dict[tuple[str, int], set[int]],
                 may_commit_early: float, idle_until: float,
                 seed: IncomingBatch | None = None) -> tuple[Group, Group]:
        """One commit group, taken round-robin per sender until its deadline or `max_points`:
        (batches, batches that bring `HEAVY_NEW_SERIES` or more new series each). Refused
        batches go to `rejected_acks`. With nothing to commit it sleeps on the queue until work
        arrives or `idle_until` (the next timer), never polling.

        New series cost most of a commit, so a group holds at most the budget's cap of them
        (about half an interval of work): the sender that fills it, or whose batch would pass
        it (that batch waits for the next group), is done for this group. Then the group takes,
        at once, what the other senders already have waiting (a batch without new series always
        fits) and closes (at the deadline at the latest), so a quiet node's batches go into the
        next commit whatever another node floods. A group waits at most one interval after its
        first batch, and once it holds one, only until the inbox is quiet (`group_wait`); at low
        rates, until `commit_max_delay_ms` after its first batch (`gather_wait`). A `seed` (the
        self-metrics) opens the group."""
        group, heavy = Group(), Group()
        points, cap, started = 0, self.budget.cap(), False
        done: set[object] = set()  # senders whose turn in this group is over
        # Nothing to commit yet: sleep until the next timer (stopping: at most one interval, in
        # case `stop` found the queue full and could not queue its `WAKE`).
        deadline = time.monotonic() + interval if self._stopping.is_set() else idle_until
        first_at = time.monotonic()
        max_delay = 0.0 if self._stopping.is_set() else self.groups.max_delay_s
        if seed is not None:
            group.add(seed)
            started, deadline = True, first_at + interval
        while points < max_points:
            now = time.monotonic()
            left = group_wait(now, deadline, bool(group.batches), may_commit_early)
            if group.batches:
                left = max(left, gather_wait(now, first_at, points, max_delay))
            if left <= 0:
                break
            timeout = 0.0 if done else left
            try:
                got = self._fair.get(timeout=timeout, skip=done)
            except queue.Empty:
                break
            if isinstance(got, Wake):
                break
            # a frame handed straight to the queue is accepted here
            item = self.acceptor.accept(got) if isinstance(got, Frame) else got
            if item is None:
                continue
            if not started:  # a batch waits at most one interval for its commit (or max delay)
                first_at = time.monotonic()
                started, deadline = True, first_at + interval
            if isinstance(item, Refused):
                rejected_acks[(item.node, item.epoch)].add(item.seq)
                continue
            if isinstance(item, IncomingBatch):  # from inside (analytics results): whoever
                max_delay = 0.0  # counted them done reads them next, so no gathering
            new = len(item.new_series) if isinstance(item, Accepted) else 0
            taken = group.new_series + heavy.new_series
            if new and taken and taken + new > cap:  # does not fit: it opens the next group
                self._fair.put_back(item)
                self.budget.deferred += 1
                done.add(FairInbox.key_of(item))
                continue
            points += self.groups.take(group, heavy, item, max_delay > 0, points)
            if taken + new >= cap > taken:  # this batch filled the group
                done.add(FairInbox.key_of(item))
        return group, heavy

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
        """Finish the current group, checkpoint, and end (idempotent): wakes the writer."""
        self._stopping.set()
        try:
            self._in.put_nowait(WAKE)
        except queue.Full:
            pass  # a full queue keeps the writer awake
