"""Persisted agent identity in time: the epoch and the next batch seq.

Two files in the state directory:

* ``state.json`` (written atomically: temp file, fsync, rename, fsync of the directory) holds the
  epoch and ``reserved_until``: every seq handed out so far is below it, so after any crash,
  power loss included, the agent resumes at or below it and never reuses a seq in the epoch.
  Seqs are reserved in blocks so the fsync happens once per block, not once per batch.
* ``seq.cursor`` (28 bytes, rewritten in place with ``pwrite``, never fsynced) holds the exact
  next seq plus the kernel's boot id and a crc32. After ``kill -9`` the page cache still has it
  (same boot id), so the sequence continues without a gap; after a reboot the cursor may be stale,
  so it is ignored and the agent resumes at ``reserved_until`` (a gap, never a reuse).

A missing or unreadable ``state.json`` starts a new epoch (wall-clock ms, so a wiped agent's new
epoch is larger than its old one); an unreadable file is moved aside, never blocking start-up.
Seqs start at 1 in each epoch.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from legion.kernel.durable_files import atomic_write
from legion.kernel.errors import LegionError

log = logging.getLogger("legion.node_agent.state")

STATE_FILE = "state.json"
CURSOR_FILE = "seq.cursor"
DEFAULT_BLOCK = 1024
_CURSOR = struct.Struct("<QQ16sI")  # epoch, next_seq, boot id, crc32 of the first 32 bytes
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def _boot_id() -> bytes:
    """The kernel's boot id (16 bytes); zeros where unknown (then the cursor is never trusted)."""
    try:
        text = Path(_BOOT_ID_PATH).read_text().strip().replace("-", "")
        return bytes.fromhex(text)[:16].ljust(16, b"\0")
    except (OSError, ValueError):
        return b"\0" * 16


class SeqAllocator:
    """Epoch and seq allocator; `SeqAllocator.open(dir)`, then `next_seq()` per batch."""

    def __init__(self, directory: Path, epoch: int, next_seq: int, reserved_until: int,
                 block: int, new_epoch: bool, boot_id: bytes) -> None:
        self.directory = directory
        self.epoch = epoch
        self.new_epoch = new_epoch
        self._next = next_seq
        self._reserved = reserved_until
        self._block = block
        self._boot = boot_id
        self._cursor_fd: int | None = os.open(directory / CURSOR_FILE,
                                              os.O_RDWR | os.O_CREAT, 0o600)
        if self._reserved <= self._next:
            self._reserve(self._next)
        self._write_cursor()

    @classmethod
    def open(cls, directory: str | os.PathLike[str], block: int = DEFAULT_BLOCK,
             clock_ms: Callable[[], int] | None = None) -> SeqAllocator:
        """Load or create the state in `directory`; a wiped or unreadable one starts a new epoch."""
        if block < 1:
            raise LegionError(f"seq block must be >= 1, got {block}")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        boot = _boot_id()
        path = d / STATE_FILE
        loaded = _load(path)
        if loaded is None:
            now_ms = clock_ms() if clock_ms is not None else int(time.time() * 1000)
            epoch = max(1, now_ms)
            prior = _cursor_epoch(d / CURSOR_FILE)
            if prior is not None and prior >= epoch:  # clock went back: still a new epoch
                epoch = prior + 1
            log.info("event=new_epoch epoch=%d dir=%s", epoch, d)
            return cls(d, epoch, 1, 0, block, True, boot)
        epoch, reserved = loaded
        nxt = reserved
        cur = _read_cursor(d / CURSOR_FILE)
        if cur is not None and cur[0] == epoch and cur[2] == boot and boot != b"\0" * 16 \
                and 1 <= cur[1] <= reserved:
            nxt = cur[1]
        elif reserved > 1:
            log.info("event=seq_resume_at_reservation epoch=%d next_seq=%d", epoch, reserved)
        return cls(d, epoch, nxt, reserved, block, False, boot)

    def next_seq(self) -> int:
        """Hand out the next seq of this epoch (strictly increasing, never reused)."""
        if self._cursor_fd is None:
            raise LegionError("SeqAllocator is closed")
        seq = self._next
        if seq >= self._reserved:
            self._reserve(seq)
        self._next = seq + 1
        self._write_cursor()
        return seq

    def peek_next_seq(self) -> int:
        """The seq the next `next_seq()` call will return."""
        return self._next

    def close(self) -> None:
        """Close the cursor file (idempotent); the sequence continues exactly on the next open."""
        if self._cursor_fd is not None:
            os.close(self._cursor_fd)
            self._cursor_fd = None

    def _reserve(self, seq: int) -> None:
        self._reserved = seq + self._block
        body = {"version": 1, "epoch": self.epoch, "reserved_until": self._reserved}
        atomic_write(self.directory / STATE_FILE, json.dumps(body).encode())

    def _write_cursor(self) -> None:
        assert self._cursor_fd is not None
        head = struct.pack("<QQ16s", self.epoch, self._next, self._boot)
        os.pwrite(self._cursor_fd, head + struct.pack("<I", zlib.crc32(head)), 0)


def _load(path: Path) -> tuple[int, int] | None:
    """(epoch, reserved_until) from state.json, or None when missing or unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(raw)
        epoch, reserved = obj["epoch"], obj["reserved_until"]
        if not (isinstance(epoch, int) and isinstance(reserved, int)
                and epoch >= 1 and reserved >= 0):
            raise ValueError("bad field types")
        return epoch, reserved
    except (ValueError, KeyError, TypeError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time() * 1000)}")
        os.replace(path, aside)
        log.warning("event=state_unreadable moved_to=%s error=%s", aside.name, exc)
        return None


def _read_cursor(path: Path) -> tuple[int, int, bytes] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) < _CURSOR.size:
        return None
    epoch, nxt, boot, crc = _CURSOR.unpack_from(raw)
    if zlib.crc32(raw[:_CURSOR.size - 4]) != crc:
        return None
    return epoch, nxt, boot


def _cursor_epoch(path: Path) -> int | None:
    cur = _read_cursor(path)
    return cur[0] if cur is not None else None
