"""Where the spool's pending records are: (epoch, seq) to segment, payload offset, length and
timestamp; the segments in append order; the records the aggregator committed; bytes on disk.

In memory only: the spool (spool.py) does the file I/O and keeps this in step with it.
"""

from __future__ import annotations

from collections.abc import Iterator

from legion.kernel.spool.records import HEADER, Key, RecordPos, Segment

Entry = tuple[Segment, int, int, int]
"""Segment, payload offset, payload length, ts_ms."""

SMALL_RANGE = 4096
"""A released or committed range shorter than this is probed seq by seq; a longer one walks the
segments whose seq bounds overlap it."""


class RecordIndex:
    """The pending records of a spool's segment files, and those segments."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.entries: dict[Key, Entry] = {}
        self.committed: set[Key] = set()
        self.bytes = 0  # size of all segment files

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add_segment(self, seg: Segment) -> None:
        """Track a segment file (a new one, or one found at open with its records indexed)."""
        self.segments.append(seg)
        self.bytes += seg.size

    def load(self, found: list[tuple[Segment, list[RecordPos]]]) -> None:
        """Index the segments found at open with their good records (`records.load_segments`);
        a key found twice (never written twice by the spool) keeps its first copy."""
        for seg, records in found:
            for rec in records:
                key = (rec.epoch, rec.seq)
                if key not in self.entries:
                    self.add(seg, key, rec.offset + HEADER.size, rec.length, rec.ts_ms)
            self.add_segment(seg)

    def add(self, seg: Segment, key: Key, offset: int, length: int, ts_ms: int) -> None:
        """Index a record of `seg` whose payload starts at `offset`."""
        seg.add(key)
        self.entries[key] = (seg, offset, length, ts_ms)

    def owner(self, key: Key) -> Segment | None:
        """The segment holding the pending record `key`, if any."""
        entry = self.entries.get(key)
        return entry[0] if entry is not None else None

    def live(self, seg: Segment) -> list[Key]:
        """The pending records of `seg`, in append order."""
        return [k for k in seg.keys if self.owner(k) is seg]

    def forget(self, key: Key) -> Segment | None:
        """Unindex one record (released, or found corrupt); returns the segment it was in."""
        entry = self.entries.pop(key, None)
        self.committed.discard(key)
        if entry is None:
            return None
        entry[0].pending -= 1
        return entry[0]

    def remove_segment(self, seg: Segment) -> None:
        """Stop tracking a segment and every record it still holds."""
        for k in self.live(seg):
            del self.entries[k]
            self.committed.discard(k)
        self.segments.remove(seg)
        self.bytes -= seg.size

    def keys_in(self, epoch: int, first: int, last: int) -> Iterator[Key]:
        """Pending keys of `epoch` with first <= seq <= last."""
        if last - first < SMALL_RANGE:
            for s in range(first, last + 1):
                if (epoch, s) in self.entries:
                    yield (epoch, s)
            return
        for seg in list(self.segments):
            b = seg.bounds.get(epoch)
            if b is not None and b[0] <= last and b[1] >= first:
                yield from [k for k in seg.keys
                            if k[0] == epoch and first <= k[1] <= last and k in self.entries]

    def release_range(self, epoch: int, first: int, last: int,
                      touched: set[int] | None = None) -> int:
        """Forget the records in the range; ids of their segments go to `touched`."""
        keys = list(self.keys_in(epoch, first, last))
        for k in keys:
            seg = self.forget(k)
            if touched is not None and seg is not None:
                touched.add(seg.id)
        return len(keys)

    def pending_keys(self) -> list[tuple[int, int, int]]:
        """(epoch, seq, ts_ms) of every pending record, oldest first."""
        return [(k[0], k[1], self.entries[k][3])
                for seg in self.segments for k in seg.keys if k in self.entries]

    def released_seqs(self) -> dict[int, list[int]]:
        """Seqs, by epoch, of released records still in segment files (what released.log holds)."""
        by_epoch: dict[int, list[int]] = {}
        for seg in self.segments:
            for k in seg.keys:
                if k not in self.entries:
                    by_epoch.setdefault(k[0], []).append(k[1])
        return by_epoch
