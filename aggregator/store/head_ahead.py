"""Which batches went into the query head before their commit.

At low rates the ingest writer gathers batches for up to `aggregator.commit_max_delay_ms` before
it commits them (`commit_groups.gather_wait`). So that stepped queries answered from the query
head are not that much staler, the writer hands each batch to `Store.feed_ahead` as it takes it
(`CommitGroups.take`): a batch whose series are all stored already goes into the head at once
(the others at their commit, as before). The head's partials are sums, so the commit must not
feed such a batch again: this remembers the keys fed ahead together with the head they went
into; a head replaced meanwhile (a failed feed) gets them at commit like any other batch. When
the commit of a batch fed ahead fails, the store drops the head, which the next query reloads
from the file.
"""

from __future__ import annotations

from collections.abc import Iterable

from legion.aggregator.store.head import QueryHead
from legion.aggregator.store.types import BatchKey


class HeadAhead:
    """Keys of batches fed into one query head before their commit."""

    def __init__(self) -> None:
        self._head: QueryHead | None = None
        self._keys: set[BatchKey] = set()

    def add(self, head: QueryHead, key: BatchKey) -> None:
        """`key`'s points went into `head`."""
        if head is not self._head:
            self._head, self._keys = head, set()
        self._keys.add(key)

    def take(self, head: QueryHead | None, keys: Iterable[BatchKey]) -> set[BatchKey]:
        """Those of `keys` already in `head` (forgotten here: their commit is under way)."""
        if head is None or head is not self._head or not self._keys:
            return set()
        found = self._keys.intersection(keys)
        self._keys -= found
        return found
