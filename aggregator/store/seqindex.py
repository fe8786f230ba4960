"""In-memory index of stored seqs per (node, epoch), kept as sorted inclusive ranges."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

FIRST_SEQ = 1
"""Agents number batches from 1 in each epoch; `missing` counts from here."""


class SeqRanges:
    """Sorted, disjoint, non-adjacent inclusive ranges of ints; cheap `in` and `add`."""

    __slots__ = ("_starts", "_ends", "count")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.count = 0

    def __contains__(self, seq: int) -> bool:
        i = bisect_right(self._starts, seq) - 1
        return i >= 0 and seq <= self._ends[i]

    def add(self, seq: int) -> None:
        """Add one seq (no-op if present)."""
        self.add_range(seq, seq)

    def add_range(self, lo: int, hi: int) -> None:
        """Add the inclusive range lo..hi, merging with neighbours."""
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, lo) - 1
        if i >= 0 and ends[i] >= lo - 1:
            lo = starts[i]
        else:
            i += 1
        j = i
        covered = 0
        while j < len(starts) and starts[j] <= hi + 1:
            covered += ends[j] - starts[j] + 1
            hi = max(hi, ends[j])
            j += 1
        starts[i:j] = [lo]
        ends[i:j] = [hi]
        self.count += (hi - lo + 1) - covered

    def ranges(self) -> list[tuple[int, int]]:
        """The ranges as (first, last) pairs."""
        return list(zip(self._starts, self._ends, strict=True))

    def max(self) -> int | None:
        """The largest seq, or None when empty."""
        return self._ends[-1] if self._ends else None

    def stored_between(self, lo: int, hi: int) -> int:
        """How many seqs in lo..hi are present."""
        n = 0
        for s, e in zip(self._starts, self._ends, strict=True):
            if e < lo:
                continue
            if s > hi:
                break
            n += min(e, hi) - max(s, lo) + 1
        return n


class SeqIndex:
    """Stored seqs per (node, epoch); the duplicate check and `missing` read only this."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], SeqRanges] = {}

    def contains(self, node: str, epoch: int, seq: int) -> bool:
        """Whether (node, epoch, seq) is stored."""
        r = self._by_key.get((node, epoch))
        return r is not None and seq in r

    def add(self, node: str, epoch: int, seq: int) -> None:
        """Record one stored key."""
        self._ranges(node, epoch).add(seq)

    def add_range(self, node: str, epoch: int, lo: int, hi: int) -> None:
        """Record an inclusive range of stored seqs (used when loading)."""
        self._ranges(node, epoch).add_range(lo, hi)

    def ranges(self, node: str, epoch: int) -> list[tuple[int, int]]:
        """Stored ranges for one (node, epoch)."""
        r = self._by_key.get((node, epoch))
        return r.ranges() if r else []

    def missing(self, node: str, epoch: int, last_seq: int) -> int:
        """Seqs in FIRST_SEQ..last_seq of this epoch that are not stored."""
        if last_seq < FIRST_SEQ:
            return 0
        r = self._by_key.get((node, epoch))
        have = r.stored_between(FIRST_SEQ, last_seq) if r else 0
        return (last_seq - FIRST_SEQ + 1) - have

    def count(self, node: str, epoch: int, lo: int, hi: int) -> int:
        """How many seqs in lo..hi of this node and epoch are in the index."""
        r = self._by_key.get((node, epoch))
        return r.stored_between(lo, hi) if r else 0

    def load(self, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """Load (node, epoch, first, last) range rows."""
        for node, epoch, lo, hi in rows:
            self.add_range(node, int(epoch), int(lo), int(hi))

    def _ranges(self, node: str, epoch: int) -> SeqRanges:
        r = self._by_key.get((node, epoch))
        if r is None:
            r = self._by_key[(node, epoch)] = SeqRanges()
        return r
