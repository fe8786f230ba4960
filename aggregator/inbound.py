"""What travels from the receiving side to the ingest writer, on its one bounded queue.

The receiver takes a `Frame` off the agents' socket and accepts it at once (`acceptance.py`):
the writer gets an `Accepted` batch to commit or a `Refused` one to record and ack `rejected`.
Batches made inside the aggregator (the analytics bridge's results) are `IncomingBatch`es,
stored as they are. A bare `Frame` (handed straight to the queue) is accepted by the writer.
`WAKE` only wakes a waiting writer (to stop).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from legion.aggregator.store import IncomingBatch
from legion.proto import Labels

SeriesKey = tuple[str, str, Labels]
"""(node, metric, labels): one series."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One received message: its bytes, the sender's Curve key (z85), when it arrived and its
    size on the wire (`data` holds only the head of a frame over `max_message_bytes`)."""

    data: bytes
    sender: bytes
    received_ms: int
    size: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """An agent's batch, decoded, authenticated and admitted: the writer only commits it.
    `new_series` are the series it creates, held by the limits until its commit settles."""

    batch: IncomingBatch
    sender: bytes
    new_series: frozenset[SeriesKey]


@dataclass(frozen=True, slots=True)
class Refused:
    """A batch refused whole (series limit, bad frame with a readable header): the writer
    records it, then acks it `rejected` so its agent stops resending it."""

    node: str
    epoch: int
    seq: int
    sender: bytes


class Wake(enum.Enum):
    """Wakes the writer from its wait; carries nothing."""

    WAKE = 0


WAKE = Wake.WAKE

Inbound: TypeAlias = Frame | Accepted | Refused | IncomingBatch | Wake
"""What the writer's queue carries."""
