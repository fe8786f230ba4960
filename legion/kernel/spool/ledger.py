"""The spool's lifetime counters and dropped seq ranges, kept in ``meta.json`` across restarts,
and how losses found at open (bad bytes, torn tails) are counted into them.

``batches_dropped_total`` is what the aggregator reports as a node's ``dropped`` (it reads the
latest ``legion_agent_batches_dropped_total`` sample), so it must not reset when the agent
restarts; it resets only with a wiped state directory, which also starts a new epoch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Container
from pathlib import Path

from legion.kernel.durable_files import atomic_write
from legion.kernel.spool.records import Key, to_ranges

log = logging.getLogger("legion.kernel.spool")

MAX_DROPPED_RANGES = 1000
COUNTERS = ("batches_dropped_total", "spool_drop_events_total",
            "spool_quarantined_bytes_total", "spool_quarantine_events_total",
            "spool_committed_evicted_total", "spool_corrupt_reads_total",
            "spool_write_errors_total")


class Ledger:
    """Counters plus the last `MAX_DROPPED_RANGES` dropped (epoch, first, last) seq runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.dropped: list[tuple[int, int, int]] = []
        self.generation = 0  # bumps on every drop, so `Delivery` knows to look
        try:
            obj = json.loads(path.read_bytes())
            for k in COUNTERS:
                if isinstance(obj.get(k), int):
                    self.counters[k] = obj[k]
            self.dropped = [(int(r[0]), int(r[1]), int(r[2]))
                            for r in obj.get("dropped_ranges", [])
                            if isinstance(r, list) and len(r) == 3][-MAX_DROPPED_RANGES:]
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # missing or unreadable counters start at zero; never block start-up

    def note_dropped(self, keys: list[tuple[int, int]], events: int) -> None:
        """Count dropped (epoch, seq) batches and merge them into the dropped ranges."""
        self.counters["batches_dropped_total"] += len(keys)
        self.counters["spool_drop_events_total"] += events
        by_epoch: dict[int, list[int]] = {}
        for ep, seq in keys:
            by_epoch.setdefault(ep, []).append(seq)
        for ep, seqs in by_epoch.items():
            for a, b in to_ranges(seqs):
                last = self.dropped[-1] if self.dropped else None
                if last is not None and last[0] == ep and last[2] + 1 == a:
                    self.dropped[-1] = (ep, last[1], b)
                else:
                    self.dropped.append((ep, a, b))
        del self.dropped[:-MAX_DROPPED_RANGES]
        self.generation += 1

    def arrived(self, epoch: int, first: int, last: int) -> int:
        """Un-count dropped seqs the aggregator acknowledged after all (evicted after they were
        sent, before their ack came): `batches_dropped_total` counts only real losses."""
        removed = 0
        kept: list[tuple[int, int, int]] = []
        for ep, a, b in self.dropped:
            if ep != epoch or b < first or a > last:
                kept.append((ep, a, b))
                continue
            removed += min(b, last) - max(a, first) + 1
            if a < first:
                kept.append((ep, a, first - 1))
            if b > last:
                kept.append((ep, last + 1, b))
        if removed:
            self.dropped = kept
            self.counters["batches_dropped_total"] = max(
                0, self.counters["batches_dropped_total"] - removed)
            self.generation += 1
        return removed

    def note_quarantined(self, gaps: list[tuple[Key, Key]],
                         released: list[tuple[int, int, int]], present: Container[Key]) -> None:
        """Count the seqs lost in bad bytes found at open: those between the good records on
        either side of each bad region (appends are in seq order), unless on disk elsewhere
        (`present`), released (the aggregator has them) or counted as dropped already. Gaps away
        from bad bytes are records released (a deleted or emptied segment) or dropped before:
        not counted."""
        known = {(ep, s) for ep, a, b in [*self.dropped, *released] for s in range(a, b + 1)}
        lost = sorted({(ep, s) for (ep, a), (ep2, b) in gaps if ep == ep2
                       for s in range(a + 1, b) if (ep, s) not in present
                       and (ep, s) not in known})
        if lost:
            self.note_dropped(lost, events=0)
            log.warning("event=spool_quarantine_lost batches=%d first_seq=%d", len(lost),
                        lost[0][1])

    def note_torn(self, torn: list[Key | None], present: Container[Key]) -> None:
        """A record cut short at the end of a segment (kill -9 or power loss mid-append) is
        lost: counted as dropped once, under the seq it held (`records.torn_key`); one whose seq
        cannot be known still counts in `batches_dropped_total`, with no range."""
        def counted(k: Key) -> bool:
            return any(ep == k[0] and a <= k[1] <= b for ep, a, b in self.dropped)
        keys = [k for k in torn if k is not None and k not in present and not counted(k)]
        unknown = sum(k is None for k in torn)
        if keys:
            self.note_dropped(keys, events=0)
        if unknown:
            self.counters["batches_dropped_total"] += unknown
        if keys or unknown:
            log.warning("event=spool_torn_tail_lost batches=%d seqs=%s", len(keys) + unknown,
                        ",".join(str(k[1]) for k in keys) or "unknown")

    def save(self) -> None:
        """Write meta.json atomically; a disk error is logged, the next save retries."""
        body = {**self.counters, "dropped_ranges": [list(r) for r in self.dropped]}
        try:
            atomic_write(self.path, json.dumps(body).encode())
        except OSError as exc:
            log.warning("event=spool_meta_write_failed error=%s", exc)
