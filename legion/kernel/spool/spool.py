"""Bounded on-disk spool of encoded batches: the agent's last copy until the aggregator checkpoints.

Layout of the spool directory::

    seg-0000000000000001.log ...   segment files of records (format: records.py)
    released.log                   seq ranges released since the last compaction
    meta.json                      lifetime counters: dropped batches and ranges, quarantine
    quarantine/                    bad bytes found at open, one file per bad region

Durability: `append` writes each record with one unbuffered ``write()``, so once it returns the
record survives ``kill -9`` of the process (it is in the page cache). ``fsync`` runs at most every
``sync_interval_ms`` (0: after every append); a power loss or kernel crash can lose the records
appended since the last fsync, i.e. up to ``sync_interval_ms`` of the newest batches (plus the
time until the next `append`/`sync_if_due` call). Those batches were still sent from memory, so
the aggregator acknowledges what it got.

Release: released seqs are appended to ``released.log`` while their records are still on disk.
A segment whose records are all released is deleted, except the active one: it is truncated to
nothing in place and takes the next appends, with no release-log entry (its records are gone).
So a checkpoint ack that releases everything costs one ``ftruncate``, and an idle spool keeps one
empty segment file. Released records are never resent after ``kill -9`` (the truncation or the
log entry is done before `release` returns); after a power loss, those released since the last
fsync may be resent (the aggregator answers duplicates), as with the release log.

Overflow: when a record does not fit under ``max_bytes``, whole oldest segments are deleted; every
record in them that was not released counts as a dropped batch and its seq joins
`dropped_ranges()`. A bad region at open (torn tail, flipped bytes) is copied to ``quarantine/``,
counted, and skipped, and the batches it held count as dropped (a torn tail under the seq its
header or its place gives, `spool_records.torn_key`); start-up never fails on spool contents.
Not thread-safe by design beyond a lock that makes each call atomic: one thread (the agent loop)
owns it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from legion.kernel.durable_files import fsync_dir
from legion.kernel.errors import LegionError
from legion.kernel.spool import records as R
from legion.kernel.spool.index import RecordIndex
from legion.kernel.spool.ledger import Ledger
from legion.kernel.spool.records import Key, Segment
from legion.kernel.spool.release_log import ReleaseLog

log = logging.getLogger("legion.kernel.spool")


class Spool:
    """Bounded segment spool; `append`, `release`, `pending`, `read`, `stats`, `close`.

    `epoch` (required) tags every record appended by this instance: records are keyed by
    (epoch, seq), so batches of an earlier epoch found at open stay pending and releasable.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 256 * 1024 * 1024,
                 sync_interval_ms: int = 500, *, epoch: int, segment_bytes: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] | None = None) -> None:
        if max_bytes < R.HEADER.size + 1 or sync_interval_ms < 0:
            raise LegionError(f"bad spool limits max_bytes={max_bytes} "
                              f"sync_interval_ms={sync_interval_ms}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.sync_interval_s = sync_interval_ms / 1000.0
        self.epoch = epoch
        self.segment_bytes = segment_bytes or min(16 << 20, max(4096, max_bytes // 16))
        self._clock = clock
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._lock = threading.RLock()
        self._active: Segment | None = None
        self._index = RecordIndex()
        self._dirty = False
        self._dir_dirty = False
        self._last_sync = clock()
        self._closed = False
        self._recovering = True
        self._next_id = 1
        self.syncs = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "quarantine").mkdir(exist_ok=True)
        self._release_log = ReleaseLog(self.directory / "released.log")
        self._ledger = Ledger(self.directory / "meta.json")
        self._counters = self._ledger.counters
        self._recover()

    # ---------------------------------------------------------------- writing
    def append(self, seq: int, frame: bytes, *, epoch: int | None = None,
               ts_ms: int | None = None) -> bool:
        """Write one record (durable against kill -9 on return); False if it was not stored.

        Not stored (counted as a dropped batch, never raised): a record larger than the whole
        spool, or a disk error (ENOSPC, EIO) while writing it.
        """
        ep = self.epoch if epoch is None else epoch
        ts = self._wall_ms() if ts_ms is None else ts_ms
        rec = R.pack_record(ep, seq, ts, frame)
        key = (ep, seq)
        with self._lock:
            self._check_open()
            if key in self._index.entries:  # seqs are never reused: a repeat is the same batch
                return True
            if len(rec) > self.max_bytes:  # larger than the whole spool: lost, and said so
                self._ledger.note_dropped([(ep, seq)], events=1)
                self._ledger.save()
                return False
            seg = None
            try:
                self._make_room(len(rec))
                seg = self._active
                if seg is None or (seg.size > 0 and seg.size + len(rec) > self.segment_bytes):
                    seg = self._roll()
                assert seg.fd is not None
                offset = seg.size
                done = os.write(seg.fd, rec)
                while done < len(rec):  # short write (rare): finish it or raise
                    done += os.write(seg.fd, rec[done:])
            except OSError as exc:
                self._write_failed(seg, (ep, seq), exc)
                return False
            seg.size += len(rec)
            self._index.bytes += len(rec)
            self._index.add(seg, key, offset + R.HEADER.size, len(frame), ts)
            self._dirty = True
            if self.sync_interval_s == 0:
                self._sync()
            else:
                self._sync_if_due(self._clock())
            return True

    def sync_if_due(self, now: float | None = None) -> bool:
        """fsync if there are unsynced appends and the sync interval has passed; True if it did."""
        with self._lock:
            if self._closed:
                return False
            return self._sync_if_due(self._clock() if now is None else now)

    def sync(self) -> None:
        """fsync now (segment, release log and directory)."""
        with self._lock:
            if not self._closed:
                self._sync()

    def release(self, epoch: int, ranges: Iterable[tuple[int, int]]) -> int:
        """Free records whose (epoch, seq) fall in the inclusive ranges; returns how many."""
        merged = R.merge_ranges(list(ranges))
        with self._lock:
            if self._closed:
                return 0
            n = 0
            touched: set[int] = set()  # ids of the segments the released records are in
            self._arrived(epoch, merged)
            for first, last in merged:
                n += self._index.release_range(epoch, first, last, touched)
            if not n:
                return 0
            self._dirty = True  # an emptied active segment's truncation is synced with it
            # Logged only while some of them stay on disk: a fully released segment is emptied
            # or deleted below, its records gone with it.
            if any(s.id in touched and s.pending > 0 for s in self._index.segments):
                try:
                    self._release_log.append(epoch, merged)
                except OSError as exc:  # only costs a resend after a crash
                    self._counters["spool_write_errors_total"] += 1
                    log.warning("event=spool_release_log_failed error=%s", exc)
            if not self._collect_released() and self._release_log.oversized:
                self._compact_release_log()
            return n

    def mark_committed(self, epoch: int, ranges: Iterable[tuple[int, int]]) -> None:
        """Note records the aggregator committed: evicting them later is not counted as a drop."""
        with self._lock:
            merged = R.merge_ranges(list(ranges))
            for first, last in merged:
                for key in self._index.keys_in(epoch, first, last):
                    self._index.committed.add(key)
            self._arrived(epoch, merged)

    # ---------------------------------------------------------------- reading
    def pending(self) -> Iterator[tuple[int, bytes]]:
        """(seq, frame) of every unreleased record, oldest first (each frame names its epoch)."""
        for epoch, seq, _ts in self.pending_keys():
            frame = self.read(epoch, seq)
            if frame is not None:
                yield seq, frame

    def pending_keys(self) -> list[tuple[int, int, int]]:
        """(epoch, seq, ts_ms) of every unreleased record, oldest first."""
        with self._lock:
            return self._index.pending_keys()

    def read(self, epoch: int, seq: int) -> bytes | None:
        """The frame of a pending record, or None if released, dropped or found corrupt."""
        with self._lock:
            entry = self._index.entries.get((epoch, seq))
            if entry is None or self._closed:
                return None
            seg, off, length, _ts = entry
            try:
                raw = os.pread(self._fd(seg), R.HEADER.size + length, off - R.HEADER.size)
            except OSError:
                raw = b""
            header, payload = raw[:R.HEADER.size], raw[R.HEADER.size:]
            if not R.check_payload(header, payload):
                self._counters["spool_corrupt_reads_total"] += 1
                self._ledger.note_dropped([(epoch, seq)], events=0)
                self._index.forget((epoch, seq))
                self._ledger.save()
                log.warning("event=spool_corrupt_read epoch=%d seq=%d", epoch, seq)
                return None
            return payload

    @property
    def drop_generation(self) -> int:
        """Bumps whenever records are dropped (overflow, disk error, corrupt read)."""
        return self._ledger.generation

    def __contains__(self, key: object) -> bool:
        return key in self._index.entries

    def dropped_ranges(self) -> tuple[tuple[int, int, int], ...]:
        """(epoch, first, last) runs of dropped seqs, oldest first (overflow, disk, corruption)."""
        with self._lock:
            return tuple(self._ledger.dropped)

    def stats(self) -> dict[str, int]:
        """Gauges and lifetime counters, named as `legion_agent_<key>` self-metrics."""
        with self._lock:
            return {"spool_bytes": self._index.bytes, "spool_records": len(self._index),
                    "spool_segments": len(self._index.segments), **self._counters}

    def close(self) -> None:
        """fsync, write counters and close files (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._sync()
            self._ledger.save()
            for seg in self._index.segments:
                self._close_fd(seg)
            self._release_log.close()
            self._closed = True

    # ---------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise LegionError("spool is closed")

    def _fd(self, seg: Segment) -> int:
        if seg.fd is None:
            seg.fd = os.open(seg.path, os.O_RDONLY)
        return seg.fd

    def _close_fd(self, seg: Segment) -> None:
        if seg.fd is not None:
            os.close(seg.fd)
            seg.fd = None

    def _roll(self) -> Segment:
        old = self._active
        if old is not None and old.fd is not None:
            os.fsync(old.fd)  # once per segment: the old one is complete on disk
            self._close_fd(old)
        self._active = None
        seg_id, self._next_id = self._next_id, self._next_id + 1
        seg = Segment(seg_id, self.directory / f"seg-{seg_id:016d}.log")
        seg.fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._index.add_segment(seg)
        self._active = seg
        self._dir_dirty = True
        return seg

    def _make_room(self, need: int) -> None:
        dropped = False
        while self._index.segments and self._index.bytes + need > self.max_bytes:
            self._drop_segment(self._index.segments[0])
            dropped = True
        if dropped:
            self._compact_release_log()

    def _drop_segment(self, seg: Segment) -> None:
        live = self._index.live(seg)
        lost = [k for k in live if k not in self._index.committed]
        evicted = len(live) - len(lost)
        self._counters["spool_committed_evicted_total"] += evicted
        self._delete_segment(seg)
        if lost:
            self._ledger.note_dropped(lost, events=1)
            log.warning("event=spool_overflow dropped_batches=%d first_seq=%d last_seq=%d",
                        len(lost), lost[0][1], lost[-1][1])
            self._ledger.save()

    def _delete_segment(self, seg: Segment) -> None:
        self._index.remove_segment(seg)
        self._close_fd(seg)
        if self._active is seg:
            self._active = None
        try:
            seg.path.unlink(missing_ok=True)
        except OSError as exc:  # its records come back at the next open: resent, deduplicated
            log.warning("event=spool_unlink_failed segment=%s error=%s", seg.path.name, exc)
        self._dir_dirty = True

    def _write_failed(self, seg: Segment | None, key: Key, exc: OSError) -> None:
        """A failed write may leave part of a record: cut it off so offsets stay true."""
        self._counters["spool_write_errors_total"] += 1
        if seg is not None and seg.fd is not None:
            try:
                os.ftruncate(seg.fd, seg.size)
            except OSError:
                pass  # the scan at the next open quarantines whatever is left
        self._ledger.note_dropped([key], events=1)
        log.warning("event=spool_write_failed seq=%d error=%s", key[1], exc)

    def _arrived(self, epoch: int, merged: list[tuple[int, int]]) -> None:
        """Acked seqs counted as dropped arrived after all: not a loss (ledger, saved)."""
        if self._ledger.dropped and sum(self._ledger.arrived(epoch, a, b) for a, b in merged):
            self._ledger.save()

    def _collect_released(self) -> bool:
        """Free fully released segments; True if any file was deleted (the log was compacted).

        The active segment is emptied in place and takes the next appends: no file is created or
        deleted and the release log is not rewritten, so a checkpoint ack costs one ftruncate.
        """
        active = self._active
        if active is not None and active.pending <= 0 and active.keys:
            self._empty_active(active)  # if the disk refuses, it is deleted below instead
        done = [s for s in self._index.segments if s.pending <= 0 and s.keys]
        for seg in done:
            self._delete_segment(seg)
        if done:
            self._compact_release_log()
        return bool(done)

    def _empty_active(self, seg: Segment) -> None:
        """Truncate the fully released active segment to nothing (its keys go with it)."""
        assert seg.fd is not None
        try:
            os.ftruncate(seg.fd, 0)
        except OSError as exc:
            self._counters["spool_write_errors_total"] += 1
            log.warning("event=spool_truncate_failed segment=%s error=%s", seg.path.name, exc)
            return
        self._index.bytes -= seg.size
        seg.size = seg.pending = 0
        seg.keys.clear()
        seg.bounds.clear()

    def _sync_if_due(self, now: float) -> bool:
        if self._dirty and now - self._last_sync >= self.sync_interval_s:
            self._sync()
            return True
        return False

    def _sync(self) -> None:
        try:
            if self._active is not None and self._active.fd is not None:
                os.fsync(self._active.fd)
            self._release_log.sync()
            if self._dir_dirty:
                fsync_dir(self.directory)
                self._dir_dirty = False
        except OSError as exc:  # the data is still in the page cache; try again next time
            self._counters["spool_write_errors_total"] += 1
            log.warning("event=spool_sync_failed error=%s", exc)
            return
        self._dirty = False
        self._last_sync = self._clock()
        self.syncs += 1

    # ---------------------------------------------------------------- recovery
    def _recover(self) -> None:
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        found = R.load_segments(self.directory, max(self.max_bytes // 8, 1 << 20))
        self._next_id, quarantined = found.next_id, found.bad_regions
        self._counters["spool_quarantined_bytes_total"] += found.quarantined_bytes
        self._counters["spool_quarantine_events_total"] += quarantined
        self._index.load(found.segments)
        self._dir_dirty = True
        released = self._release_log.read()
        for epoch, first, last in released:
            self._index.release_range(epoch, first, last)
        if quarantined:
            self._ledger.note_quarantined(found.bad_gaps, released, self._index)
            self._ledger.note_torn(found.torn, self._index)
        for seg in [s for s in self._index.segments if s.pending <= 0]:
            self._delete_segment(seg)
        self._recovering = False
        self._compact_release_log()
        self._sync()
        if quarantined:
            self._ledger.save()

    def _compact_release_log(self) -> None:
        """Rewrite released.log with only the released seqs of live segments."""
        if self._recovering:
            return  # done once at the end of recovery
        self._release_log.rewrite(self._index.released_seqs())
