"""The live feed: each batch as ingest accepts it, once, for the gateway's live stream.

Acceptance (`acceptance.py`, on the receiver thread) publishes a batch as soon as it has been
decoded, authenticated (its Curve key is bound to its node) and admitted by the series limits,
never behind a commit: a live view should not wait for durability (docs/internals.md, "The live
path"). The store stays the source of truth. A batch whose commit fails is not acked, so its
agent resends it and ingest accepts it again: the feed passes each (node, epoch, seq) on once,
so a client never sees a batch twice. A rejected batch (bad frame, unknown key, series limit)
is never accepted, so never here.

Listeners run on the receiver thread and must return at once (the hub queues the batch for its
event loop); an exception from one is counted and logged, never raised into ingest.
"""

from __future__ import annotations

from collections.abc import Callable

from legion.aggregator.store.commits import Feed
from legion.aggregator.store.seqindex import SeqRanges
from legion.aggregator.store.types import IncomingBatch

EPOCHS_KEPT = 2
"""Per node, the seqs of this many newest epochs are remembered (an agent restart starts one)."""

BatchListener = Callable[[IncomingBatch], None]


class LiveFeed:
    """Accepted batches, each (node, epoch, seq) once, to every listener."""

    def __init__(self) -> None:
        self._listeners: Feed[IncomingBatch] = Feed("live_listener_failed")
        self._seen: dict[str, dict[int, SeqRanges]] = {}  # node -> epoch -> seqs published
        self.stats = {"published": 0, "duplicates": 0, "listener_errors": 0}

    def subscribe(self, listener: BatchListener) -> Callable[[], None]:
        """Call `listener` with every new accepted batch; returns the function that unsubscribes
        it (from any thread)."""
        return self._listeners.subscribe(listener)

    def publish(self, batch: IncomingBatch) -> bool:
        """Hand an accepted batch to the listeners unless its seq was published before; True
        when it was handed on. Without listeners nothing is kept (no cost)."""
        if not self._listeners:
            return False
        if self._is_repeat(batch.node, batch.epoch, batch.seq):
            self.stats["duplicates"] += 1
            return False
        self.stats["published"] += 1
        self._listeners.publish(batch)
        self.stats["listener_errors"] = self._listeners.errors
        return True

    def _is_repeat(self, node: str, epoch: int, seq: int) -> bool:
        """Whether (node, epoch, seq) was published before; records it when not."""
        epochs = self._seen.setdefault(node, {})
        seqs = epochs.get(epoch)
        if seqs is None:
            if epochs and epoch < min(epochs) and len(epochs) >= EPOCHS_KEPT:
                return False  # an epoch older than those remembered: pass it on, keep nothing
            seqs = epochs[epoch] = SeqRanges()
            while len(epochs) > EPOCHS_KEPT:
                del epochs[min(epochs)]
        if seq in seqs:
            return True
        seqs.add(seq)
        return False
