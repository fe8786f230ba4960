"""The live feed: each batch as ingest accepts it, once, for the gateway's live stream.

The ingest writer publishes a batch when it has been decoded, authenticated (its Curve key is
bound to its node) and admitted by the series limits, before the commit that stores it: a live
view should not wait for durability (docs/internals.md, "The live path"). The store stays the
source of truth. A batch whose commit fails is not acked, so its agent resends it and ingest
accepts it again: the feed passes each (node, epoch, seq) on once, so a client never sees a batch
twice. A rejected batch (bad frame, unknown key, series limit) is never accepted, so never here.

Listeners run on the writer thread and must return at once (the hub queues the batch for its
event loop); an exception from one is counted and logged, never raised into ingest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from legion.aggregator.store.seqindex import SeqRanges
from legion.aggregator.store.types import IncomingBatch

log = logging.getLogger("legion.aggregator.live_feed")

EPOCHS_KEPT = 2
"""Per node, the seqs of this many newest epochs are remembered (an agent restart starts one)."""

BatchListener = Callable[[IncomingBatch], None]


class LiveFeed:
    """Accepted batches, each (node, epoch, seq) once, to every listener."""

    def __init__(self) -> None:
        self._listeners: tuple[BatchListener, ...] = ()
        self._lock = threading.Lock()
        self._seen: dict[str, dict[int, SeqRanges]] = {}  # node -> epoch -> seqs published
        self.stats = {"published": 0, "duplicates": 0, "listener_errors": 0}

    def subscribe(self, listener: BatchListener) -> Callable[[], None]:
        """Call `listener` with every new accepted batch; returns the function that unsubscribes
        it (from any thread)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)
        return unsubscribe

    def publish(self, batch: IncomingBatch) -> bool:
        """Hand an accepted batch to the listeners unless its seq was published before; True
        when it was handed on. Without listeners nothing is kept (no cost)."""
        listeners = self._listeners
        if not listeners:
            return False
        if self._is_repeat(batch.node, batch.epoch, batch.seq):
            self.stats["duplicates"] += 1
            return False
        self.stats["published"] += 1
        for listener in listeners:
            try:
                listener(batch)
            except Exception as exc:  # noqa: BLE001 - a listener must not fail ingest
                errors = self.stats["listener_errors"] = self.stats["listener_errors"] + 1
                if errors in (1, 10, 100) or errors % 1000 == 0:
                    log.warning("event=live_listener_failed errors=%d error=%r", errors, exc)
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
