"""A commit group's life in the ingest writer: gathered, fed ahead to the query head, committed,
acked, checkpointed. `ingest.IngestWriter` takes batches round-robin from its inbox and decides
when a group closes (`group_wait`, `gather_wait`); everything that happens to a group's batches
from the moment one joins it is here, in `CommitGroups`:

    take(group, heavy, item)  joins the group (or `heavy`, `HEAVY_NEW_SERIES`); while gathering at
                              a low rate, a batch whose series are stored goes into the query head
                              at once (`Store.feed_ahead`, store/head_ahead.py)
    commit(group)             one `write` (the store, then every sink); the store skips what went
                              ahead; on success settle + `committed` acks, on failure settle and
                              `Store.unfeed` (the head drops what went ahead; the agents resend)
    checkpoint()              folds the WAL, then `checkpointed` acks: agents may free their spool
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from legion.aggregator.acceptance import Acceptor
from legion.aggregator.commit_budget import CommitBudget
from legion.aggregator.inbound import Accepted
from legion.aggregator.store import IncomingBatch, Store
from legion.aggregator.store.health import is_checkpoint_busy
from legion.aggregator.telemetry import IngestTelemetry
from legion.proto import ACK_CHECKPOINTED, ACK_COMMITTED, Ack

log = logging.getLogger("legion.aggregator.ingest")

AGGREGATOR_NODE = "aggregator"
"""The node of the aggregator's own batches (self-metrics): nobody waits for their acks."""
COMMIT_FAIL_LOG_SECS = 10.0
HEAVY_NEW_SERIES = 200
"""A batch that brings at least this many new series is committed after the rest of its group,
in a commit of its own: the other batches' commit is not held by its series creation."""
QUIET_SECS = 0.005
"""A group is committed once nothing more has arrived for this long, if the last commit was at
least `commit_interval_ms` ago: a lone batch (or a burst) is stored at once, not at the end of an
interval, and commits stay at most one per interval."""
GATHER_POINTS = 2_000
"""With `commit_max_delay_ms`, a group of fewer points than this (a low rate: one agent sends ~116
a second) keeps gathering batches until that long after its first one, so that several share one
commit; from this size it is committed as without the delay. A commit's cost is nearly all fixed
(BEGIN, points, batches, COMMIT: ~2.5 ms of CPU whether it holds 1 or 5 agent batches, measured),
so at one agent this is most of the writer's CPU. At 200 hosts a 100 ms group holds ~2,300 points:
commits there are unchanged."""


def group_wait(now: float, deadline: float, has_group: bool, may_commit_early: float) -> float:
    """How long the writer waits for the next frame of a group (<= 0: commit it now): until the
    group's deadline (one interval after its first batch), and once it holds a batch, only
    `QUIET_SECS` more (not before `may_commit_early`, one interval after the last commit)."""
    if not has_group:
        return deadline - now
    return min(deadline - now, max(0.0, may_commit_early - now) + QUIET_SECS)


def gather_wait(now: float, first_at: float, points: int, max_delay: float) -> float:
    """How long a group whose first batch came at `first_at` still waits to gather more batches
    (<= 0: not at all): until `max_delay` after it while it holds fewer than `GATHER_POINTS`."""
    if max_delay <= 0 or points >= GATHER_POINTS:
        return 0.0
    return first_at + max_delay - now


def ranges_of(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Compress integers into sorted inclusive (first, last) runs."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return tuple((a, b) for a, b in out)


@dataclass
class Group:
    """Batches for one commit: what is stored, and the accepted ones to settle after it."""

    batches: list[IncomingBatch] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)
    new_series: int = 0

    def add(self, item: Accepted | IncomingBatch) -> None:
        """Add one batch (an `IncomingBatch` is the aggregator's own: nothing to settle)."""
        if isinstance(item, Accepted):
            self.accepted.append(item)
            self.new_series += len(item.new_series)
            item = item.batch
        self.batches.append(item)


class CommitGroups:
    """Takes batches into commit groups, commits and acks them, and checkpoints; `publish`
    sends one ack to a node (the writer's PUB socket)."""

    def __init__(self, store: Store, acceptor: Acceptor, budget: CommitBudget,
                 telemetry: IngestTelemetry, publish: Callable[[str, Ack], None],
                 max_delay_s: float) -> None:
        self._store, self.acceptor, self.budget, self._tm = store, acceptor, budget, telemetry
        self.publish = publish
        self.max_delay_s = max_delay_s  # low rates: gather (`gather_wait`); 0 = off
        self._next_fail_log = 0.0
        # (node, epoch) -> seqs committed since the last checkpoint: not yet safe to free.
        self._uncheckpointed: dict[tuple[str, int], set[int]] = defaultdict(set)

    def take(self, group: Group, heavy: Group, item: Accepted | IncomingBatch,
             gathering: bool, points: int) -> int:
        """Add `item` to `group` (to `heavy` with `HEAVY_NEW_SERIES` or more new series); while
        `gathering` (the group holds `points` < `GATHER_POINTS`), one without new series goes
        into the query head now. Returns its points."""
        new = len(item.new_series) if isinstance(item, Accepted) else 0
        (heavy if new >= HEAVY_NEW_SERIES else group).add(item)
        batch = item.batch if isinstance(item, Accepted) else item
        if not new and gathering and points < GATHER_POINTS:  # it waits: the head need not
            self._store.feed_ahead(batch)
        return len(batch.batch)

    def commit(self, group: Group) -> bool:
        """Store one group and ack it; False when the commit failed (nothing acked: the agents
        resend). Either way its accepted batches are settled."""
        t0 = time.perf_counter()
        try:
            result = self._store.write(group.batches)
        except Exception as exc:  # noqa: BLE001 - a failed commit must not kill ingest
            self.acceptor.settle(group.accepted, stored=False)
            self._store.unfeed(group.batches)  # the query head must not keep them
            self._tm.add(commit_errors=1)
            now = time.monotonic()
            if now >= self._next_fail_log:  # a full disk fails every commit: rate-limited
                self._next_fail_log = now + COMMIT_FAIL_LOG_SECS
                log.error("event=commit_failed batches=%d errors_total=%d error=%s",
                          len(group.batches), self._tm.snapshot()["commit_errors"],
                          str(exc).splitlines()[0])
            return False  # nothing acked: agents resend; the store keeps nothing half-written
        dt = time.perf_counter() - t0
        self.acceptor.settle(group.accepted, stored=True)
        self.budget.observe(dt, group.new_series)
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
                self.publish(node, Ack(ACK_COMMITTED, epoch, ranges_of(seqs)))
        for (node, epoch), seqs in checkpointed.items():
            self.publish(node, Ack(ACK_CHECKPOINTED, epoch, ranges_of(seqs)))
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
            self.publish(node, Ack(ACK_CHECKPOINTED, epoch, ranges_of(seqs)))
        return True

