"""Wire schema v1 as frozen dataclasses: the envelope and its bodies.

Every message is one msgpack map::

    {"v": 1, "kind": "metrics", "node": "web-1", "epoch": 17, "seq": 42, "ts": <ms>, "body": {...}}

A metrics body is columnar. Distinct metric names and distinct label sets are sent once per batch
and each point refers to them by index, so a 1000-point batch decodes into four numpy arrays
without a Python loop per point::

    {"names": ["system_cpu_usage_percent", ...], "labels": [{"cpu": "0"}, {}, ...],
     "name_idx": <uint32 LE bytes>, "label_idx": <uint32 LE bytes>,
     "values": <float64 LE bytes>, "ts": <int64 LE bytes, ms since epoch>}
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from legion.proto.limits import SCHEMA_VERSION

if TYPE_CHECKING:  # numpy is imported where arrays are made: the node agent's encode path
    import numpy as np  # (`encode_samples`) never needs it, which keeps the agent small

KIND_METRICS = "metrics"
KIND_ACK = "ack"

ACK_COMMITTED = "committed"
ACK_CHECKPOINTED = "checkpointed"
ACK_REJECTED = "rejected"
ACK_LEVELS = (ACK_COMMITTED, ACK_CHECKPOINTED, ACK_REJECTED)

Labels = tuple[tuple[str, str], ...]
"""A label set in canonical form: (key, value) pairs sorted by key."""


def canonical_labels(labels: Mapping[str, str] | Labels | None) -> Labels:
    """Return the canonical (sorted, hashable) form of a label mapping."""
    if not labels:
        return ()
    items = labels.items() if isinstance(labels, Mapping) else labels
    return tuple(sorted((str(k), str(v)) for k, v in items))


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading: metric name, labels, value, timestamp in ms since the Unix epoch."""

    name: str
    labels: Labels
    value: float
    ts_ms: int


@dataclass(frozen=True, slots=True, eq=False)
class MetricsBatch:
    """Columnar batch of points. Arrays are read-only and all have one entry per point."""

    names: tuple[str, ...]
    label_sets: tuple[Labels, ...]
    name_idx: np.ndarray  # uint32
    label_idx: np.ndarray  # uint32
    values: np.ndarray  # float64
    ts_ms: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def from_samples(cls, samples: Iterable[Sample]) -> MetricsBatch:
        """Build a batch from samples, interning names and label sets."""
        import numpy as np

        names, label_sets, n_idx, l_idx, values, ts = intern_samples(samples)
        return cls(
            names=names, label_sets=label_sets,
            name_idx=_frozen(np.frombuffer(n_idx, dtype="<u4").copy()),
            label_idx=_frozen(np.frombuffer(l_idx, dtype="<u4").copy()),
            values=_frozen(np.frombuffer(values, dtype="<f8").copy()),
            ts_ms=_frozen(np.frombuffer(ts, dtype="<i8").copy()),
        )

    def samples(self) -> Iterator[Sample]:
        """Iterate the points as `Sample`s (convenient, not fast)."""
        for n, lb, v, t in zip(self.name_idx, self.label_idx, self.values, self.ts_ms,
                               strict=True):
            yield Sample(self.names[n], self.label_sets[lb], float(v), int(t))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetricsBatch):
            return NotImplemented
        import numpy as np

        return (
            self.names == other.names
            and self.label_sets == other.label_sets
            and np.array_equal(self.name_idx, other.name_idx)
            and np.array_equal(self.label_idx, other.label_idx)
            and np.array_equal(self.values, other.values, equal_nan=True)
            and np.array_equal(self.ts_ms, other.ts_ms)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledgement for one node and epoch: `ranges` are inclusive (first, last) seq runs."""

    level: str
    epoch: int
    ranges: tuple[tuple[int, int], ...]


Body = MetricsBatch | Ack


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every message carries, plus its body."""

    kind: str
    node: str
    epoch: int
    seq: int
    ts_ms: int
    body: Body = field(compare=True)
    v: int = SCHEMA_VERSION


_U32 = "I" if array("I").itemsize == 4 else "L"


def intern_samples(samples: Iterable[Sample]) -> tuple[
        tuple[str, ...], tuple[Labels, ...], bytes, bytes, bytes, bytes]:
    """Columns of a batch as little-endian bytes: (names, label sets, name_idx uint32,
    label_idx uint32, values float64, ts int64), with names and label sets interned."""
    names: dict[str, int] = {}
    label_sets: dict[Labels, int] = {}
    n_idx, l_idx, values, ts = array(_U32), array(_U32), array("d"), array("q")
    for s in samples:
        n_idx.append(names.setdefault(s.name, len(names)))
        l_idx.append(label_sets.setdefault(s.labels, len(label_sets)))
        values.append(s.value)
        ts.append(s.ts_ms)
    if sys.byteorder == "big":
        for c in (n_idx, l_idx, values, ts):
            c.byteswap()
    return (tuple(names), tuple(label_sets),
            n_idx.tobytes(), l_idx.tobytes(), values.tobytes(), ts.tobytes())


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
