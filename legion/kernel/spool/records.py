"""On-disk record formats of the agent spool: segment records, the scan that finds bad bytes
(and `recover_segment`, which quarantines them), and the small release log.

Segment record (little-endian), ``HEADER.size`` = 36 bytes, then ``length`` payload bytes::

    magic b"LSP1" | crc32 u32 | length u32 | epoch u64 | seq u64 | ts_ms u64 | payload

``crc32`` (zlib) covers everything after itself: the rest of the header and the payload, so a
torn write, a flipped bit or zero-filled tail never yields a record with a wrong payload.

Release-log entry: ``epoch u64 | first u64 | last u64 | crc32 u32`` (28 bytes), one per
released seq range, so records released before a crash are not resent or reported dropped.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from legion.kernel.durable_files import atomic_write

log = logging.getLogger("legion.kernel.spool")

Key = tuple[int, int]  # (epoch, seq)
MAGIC = b"LSP1"
HEADER = struct.Struct("<4sIIQQQ")
MAX_RECORD_BYTES = 1 << 30
RELEASE = struct.Struct("<QQQI")


@dataclass(frozen=True, slots=True)
class RecordPos:
    """One good record found by `scan`: where it is and what it says it is."""

    offset: int
    length: int  # payload bytes
    epoch: int
    seq: int
    ts_ms: int


@dataclass(slots=True)
class Segment:
    """One segment file as the spool tracks it: keys in append order, seq bounds, live count."""

    id: int
    path: Path
    size: int = 0
    keys: list[Key] = field(default_factory=list)
    bounds: dict[int, list[int]] = field(default_factory=dict)  # epoch -> [min seq, max seq]
    pending: int = 0
    fd: int | None = None

    def add(self, key: Key) -> None:
        self.keys.append(key)
        self.pending += 1
        b = self.bounds.get(key[0])
        if b is None:
            self.bounds[key[0]] = [key[1], key[1]]
        else:
            b[0], b[1] = min(b[0], key[1]), max(b[1], key[1])


def pack_record(epoch: int, seq: int, ts_ms: int, payload: bytes) -> bytes:
    """Header plus payload, ready for one write()."""
    rest = struct.pack("<IQQQ", len(payload), epoch, seq, ts_ms)
    crc = zlib.crc32(payload, zlib.crc32(rest))
    return MAGIC + struct.pack("<I", crc) + rest + payload


def parse_at(data: bytes | memoryview, pos: int) -> RecordPos | None:
    """The record starting at `pos` if it is whole and its crc matches, else None."""
    end = len(data)
    if pos + HEADER.size > end:
        return None
    magic, crc, length, epoch, seq, ts_ms = HEADER.unpack_from(data, pos)
    if magic != MAGIC or length > MAX_RECORD_BYTES or pos + HEADER.size + length > end:
        return None
    body = memoryview(data)[pos + 8:pos + HEADER.size + length]
    if zlib.crc32(body) != crc:
        return None
    return RecordPos(pos, length, epoch, seq, ts_ms)


def check_payload(header: bytes, payload: bytes) -> bool:
    """True when a record read back later (header + payload) still matches its crc."""
    if len(header) != HEADER.size:
        return False
    magic, crc, length, _e, _s, _t = HEADER.unpack(header)
    return bool(magic == MAGIC and length == len(payload)
                and zlib.crc32(payload, zlib.crc32(header[8:])) == crc)


def scan(data: bytes) -> tuple[list[RecordPos], list[tuple[int, int]]]:
    """Good records and bad byte regions ``[start, end)`` of one segment's bytes.

    After a bad region the scan resynchronises on the next magic that starts a valid record, so
    one corrupt record in the middle does not take the records after it.
    """
    good: list[RecordPos] = []
    bad: list[tuple[int, int]] = []
    pos, n = 0, len(data)
    while pos < n:
        rec = parse_at(data, pos)
        if rec is not None:
            good.append(rec)
            pos += HEADER.size + rec.length
            continue
        nxt = _resync(data, pos + 1)
        bad.append((pos, n if nxt is None else nxt))
        if nxt is None:
            break
        pos = nxt
    return good, bad


def torn_key(tail: bytes, before: Key | None) -> Key | None:
    """The (epoch, seq) of the record a torn tail held (kill -9 or power loss mid-append).

    Records are appended in seq order, so the torn one follows `before` (the last good record
    before it): its own header is trusted when whole and in that order, else it is `before`'s
    next seq. None when nothing came before and the header is cut short: the seq is unknown.
    """
    if len(tail) >= HEADER.size:
        magic, _crc, _length, epoch, seq, _ts = HEADER.unpack_from(tail, 0)
        if magic == MAGIC and (before is None or (epoch == before[0] and seq > before[1])):
            return epoch, seq
    return None if before is None else (before[0], before[1] + 1)


def recover_segment(path: Path, quarantine_dir: Path, quarantine_max_bytes: int
                    ) -> tuple[list[RecordPos], int, list[tuple[int, int]], bytes | None]:
    """Scan one segment at open: (good records, clean size, bad regions ``[start, end)``, the
    bad tail's bytes or None).

    Each bad region is copied to ``quarantine_dir``; a bad tail is cut off the file; a segment
    with no good record is deleted. The quarantine keeps its newest files within
    ``quarantine_max_bytes``.
    """
    data = path.read_bytes()
    good, bad = scan(data)
    tail = data[bad[-1][0]:] if bad and bad[-1][1] == len(data) else None
    for start, end in bad:
        atomic_write(quarantine_dir / f"{path.stem}-{start:012d}.bad", data[start:end])
        log.warning("event=spool_quarantine segment=%s offset=%d bytes=%d",
                    path.name, start, end - start)
    size = len(data)
    if bad and bad[-1][1] == len(data):  # a bad tail: cut it so the file ends clean
        size = bad[-1][0]
        os.truncate(path, size)
    if not good:
        path.unlink()
    if bad:
        files = sorted(quarantine_dir.glob("*.bad"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        while len(files) > 1 and total > quarantine_max_bytes:
            total -= files[0].stat().st_size
            files.pop(0).unlink()
    return good, size, bad, tail


@dataclass(slots=True)
class Recovered:
    """What `load_segments` found: segments with their good records, the next segment id,
    bytes quarantined, bad regions, one entry per torn tail (its key, None if unknown), and the
    good records on either side of each bad region (`bad_gaps`: the seqs between them were in
    the bad bytes; gaps elsewhere are records released or dropped, not lost there)."""

    segments: list[tuple[Segment, list[RecordPos]]]
    next_id: int
    quarantined_bytes: int
    bad_regions: int
    torn: list[Key | None]
    bad_gaps: list[tuple[Key, Key]]


def load_segments(directory: Path, quarantine_max_bytes: int) -> Recovered:
    """Recover every segment file at open (oldest first). An unreadable file is logged and
    left alone."""
    out: list[tuple[Segment, list[RecordPos]]] = []
    torn: list[Key | None] = []
    gaps: list[tuple[Key, Key]] = []
    last: Key | None = None
    in_bad = False  # bad bytes since `last` (a bad tail carries over to the next segment)
    next_id, q_bytes, q_events = 1, 0, 0
    for path in sorted(directory.glob("seg-*.log")):
        try:
            seg_id = int(path.stem.split("-", 1)[1])
        except ValueError:
            continue
        next_id = max(next_id, seg_id + 1)
        try:
            good, size, bad, tail = recover_segment(path, directory / "quarantine",
                                                    quarantine_max_bytes)
        except OSError as exc:
            log.warning("event=spool_segment_unreadable segment=%s error=%s", path.name, exc)
            continue
        q_bytes, q_events = q_bytes + sum(e - s for s, e in bad), q_events + len(bad)
        if good:
            out.append((Segment(seg_id, path, size=size), good))
        bad_at = iter(sorted(s for s, _ in bad))
        nxt = next(bad_at, None)
        for rec in good:
            while nxt is not None and nxt < rec.offset:
                in_bad, nxt = True, next(bad_at, None)
            key = (rec.epoch, rec.seq)
            if in_bad and last is not None:
                gaps.append((last, key))
            in_bad, last = False, key
        if tail is not None:
            torn.append(torn_key(tail, last))
        in_bad = in_bad or nxt is not None
    return Recovered(out, next_id, q_bytes, q_events, torn, gaps)


def _resync(data: bytes, start: int) -> int | None:
    i = data.find(MAGIC, start)
    while i != -1:
        if parse_at(data, i) is not None:
            return i
        i = data.find(MAGIC, i + 1)
    return None


def pack_release(epoch: int, first: int, last: int) -> bytes:
    """One release-log entry."""
    head = struct.pack("<QQQ", epoch, first, last)
    return head + struct.pack("<I", zlib.crc32(head))


def parse_releases(data: bytes) -> list[tuple[int, int, int]]:
    """Entries of a release log; a torn or corrupt entry ends the log (nothing after is trusted)."""
    out: list[tuple[int, int, int]] = []
    for pos in range(0, len(data) - RELEASE.size + 1, RELEASE.size):
        epoch, first, last, crc = RELEASE.unpack_from(data, pos)
        if zlib.crc32(data[pos:pos + 24]) != crc or first > last:
            break
        out.append((epoch, first, last))
    return out


def to_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted inclusive runs of the given seqs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        elif not out or s > out[-1][1]:
            out.append((s, s))
    return out


def merge_ranges(ranges: list[tuple[int, int]] | tuple[tuple[int, int], ...]
                 ) -> list[tuple[int, int]]:
    """Sort and merge overlapping or adjacent inclusive ranges."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
