"""Values that cross the store's boundary."""

from __future__ import annotations

from dataclasses import dataclass

from legion.proto import MetricsBatch

BatchKey = tuple[str, int, int]
"""(node, epoch, seq): the identity of a batch."""


@dataclass(frozen=True, slots=True)
class IncomingBatch:
    """A decoded, authenticated batch on its way into the store."""

    node: str
    epoch: int
    seq: int
    batch: MetricsBatch
    received_ms: int

    @property
    def key(self) -> BatchKey:
        """(node, epoch, seq)."""
        return (self.node, self.epoch, self.seq)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Keys stored by one `write`, keys that were already stored (or repeated), points stored."""

    stored: tuple[BatchKey, ...]
    duplicates: tuple[BatchKey, ...]
    points: int = 0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Per-node bookkeeping (derived from the `batches` table when the store is opened)."""

    node: str
    first_seen_ms: int
    last_seen_ms: int
    points: int
    epoch: int
    last_seq: int
    dropped: int
