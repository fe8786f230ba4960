"""``released.log``: seq ranges released while their records are still in segment files, so a
record released before a crash is neither resent nor reported dropped (entry format: records.py).

Appended to on release; rewritten (compacted) to what live segments still need when a segment
file goes, or when it has grown past `COMPACT_BYTES`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from legion.kernel.durable_files import atomic_write
from legion.kernel.spool import records as R

log = logging.getLogger("legion.kernel.spool")

COMPACT_BYTES = 1 << 20
"""Past this size, a release that deletes no segment file compacts the log anyway."""


class ReleaseLog:
    """The open release log of one spool directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.bytes = 0
        self.dirty = False  # appended since the last fsync

    def read(self) -> list[tuple[int, int, int]]:
        """(epoch, first, last) of every good entry on disk (none before the first rewrite)."""
        return R.parse_releases(self.path.read_bytes()) if self.path.exists() else []

    def append(self, epoch: int, merged: list[tuple[int, int]]) -> None:
        """Log released ranges of one epoch; raises OSError (it only costs a resend after a
        crash: the caller counts it)."""
        self.dirty = True
        entries = b"".join(R.pack_release(epoch, a, b) for a, b in merged)
        os.write(self.fd, entries)
        self.bytes += len(entries)

    @property
    def oversized(self) -> bool:
        """Whether the log has grown past `COMPACT_BYTES`."""
        return self.bytes > COMPACT_BYTES

    def rewrite(self, released: dict[int, list[int]]) -> None:
        """Replace the log with entries for exactly `released` (seqs by epoch), atomically; on a
        disk error keep appending to the old log (the next rewrite retries)."""
        data = b"".join(R.pack_release(ep, a, b) for ep, seqs in released.items()
                        for a, b in R.to_ranges(seqs))
        try:
            atomic_write(self.path, data)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        except OSError as exc:
            log.warning("event=spool_release_log_compact_failed error=%s", exc)
            if self.fd < 0:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            return
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd
        self.bytes = len(data)

    def sync(self) -> None:
        """fsync if appended since the last one; raises OSError."""
        if self.dirty:
            os.fsync(self.fd)
            self.dirty = False

    def close(self) -> None:
        """Close the file (once)."""
        os.close(self.fd)
