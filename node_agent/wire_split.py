"""Split one tick's samples into batches the aggregator accepts (points, series, bytes).

A tick is normally one batch. With a large in-app backlog (`AgentMonitor` samples) or long label
values it could pass the wire limits: a frame over `aggregator.max_message_bytes` would be
refused (or, far over, dropped by the socket) and resent forever, one over the point or series
limits rejected whole. So such a tick is cut into halves until every part fits; each part gets
its own seq. The size is estimated from the strings and columns, generously, without encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

from legion.proto import Sample
from legion.proto import limits as L

ENVELOPE_BYTES = 256  # keys, node name, epoch, seq, ts and msgpack headers, rounded up
WORST_SAMPLE_BYTES = 24 + L.MAX_NAME_LEN * 4 + L.MAX_LABELS * (
    (L.MAX_LABEL_KEY_LEN + L.MAX_LABEL_VALUE_LEN) * 4 + 10)
"""No sample can take more (UTF-8 up to 4 bytes a character): small ticks skip the estimate."""


def estimate_bytes(samples: Sequence[Sample]) -> tuple[int, int]:
    """(upper estimate of the encoded size, distinct series) of one batch of `samples`."""
    names: set[str] = set()
    label_sets: set[tuple[tuple[str, str], ...]] = set()
    series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for s in samples:
        names.add(s.name)
        label_sets.add(s.labels)
        series.add((s.name, s.labels))
    size = ENVELOPE_BYTES + 24 * len(samples)  # name_idx, label_idx (4+4), value, ts (8+8)
    size += sum(len(n.encode()) + 5 for n in names)
    size += sum(5 + sum(len(k.encode()) + len(v.encode()) + 10 for k, v in ls)
                for ls in label_sets)
    return size, len(series)


def split_for_wire(samples: list[Sample], max_bytes: int) -> list[list[Sample]]:
    """`samples` as one or more batches, each within the points, series and byte limits."""
    out: list[list[Sample]] = []
    todo = [samples]
    while todo:  # bounded: every split halves a part; a single sample always fits
        part = todo.pop()
        if len(part) * WORST_SAMPLE_BYTES + ENVELOPE_BYTES <= max_bytes:
            out.append(part)  # the usual tick: fits whatever its strings
            continue
        size, series = estimate_bytes(part)
        if len(part) <= 1 or (len(part) <= L.MAX_POINTS_PER_BATCH
                              and series <= L.MAX_SERIES_PER_BATCH and size <= max_bytes):
            out.append(part)
        else:
            mid = len(part) // 2
            todo += [part[mid:], part[:mid]]
    return out
