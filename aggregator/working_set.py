"""Give back the code pages the aggregator touched once and does not use again (issue 17).

DuckDB's library is 66 MiB of machine code; starting up, opening the file and the first
maintenance pass touch ~40 MiB of it, and each touched page stays counted in the process's RSS
for good, although an idle aggregator runs a small part of it. `CodePageTrimmer` asks the
kernel (madvise MADV_DONTNEED) to drop this process's clean, file-backed, read-only pages (code and
read-only data of every library, nothing written): the page-cache copy stays, so a page used
again comes back by a minor fault, and what RSS shows between trims is the working set.

Only mappings without write permission and without any private (copy-on-write) page are
trimmed: for those, dropping a page cannot lose anything, since it is re-read as it was from
the file; a mapping seen for the first time, which may be a library being loaded, is left
alone until the next look. What this does not change: the page cache itself (a cgroup's
memory charge), nor any heap memory. Linux only; elsewhere it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sys
from pathlib import Path

MADV_DONTNEED = 4
TRIM_EVERY_S = 120.0
"""The service trims after start-up and then this often. One trim costs 12-17 ms of CPU (the
kernel walks every mapping for smaps): ~0.01 % of a core at this period. Between trims, RSS
regrows by the pages the idle loop and the maintenance rounds use (~4 MiB measured)."""


def clean_file_mappings(smaps: str) -> list[tuple[int, int, int]]:
    """(start, end, resident KiB) of each read-only file mapping without private pages in
    the text of /proc/PID/smaps."""
    out: list[tuple[int, int, int]] = []
    cur: dict[str, int] | None = None

    def close() -> None:
        if cur is not None and cur["ok"] and cur["anon"] == 0 and cur["dirty"] == 0 \
                and cur["rss"] > 0:
            out.append((cur["start"], cur["end"], cur["rss"]))

    for line in smaps.splitlines():
        head = line.split()
        if not head:
            continue
        if not head[0].endswith(":") and "-" in head[0]:
            close()
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            perms = head[1] if len(head) > 1 else "----"
            path = head[5] if len(head) > 5 else ""
            cur = {"start": lo, "end": hi, "rss": 0, "anon": 1, "dirty": 1,
                   "ok": int(path.startswith("/") and "w" not in perms and perms[3] == "p")}
        elif cur is not None and head[0] in ("Rss:", "Anonymous:", "Private_Dirty:"):
            cur[{"Rss:": "rss", "Anonymous:": "anon", "Private_Dirty:": "dirty"}[head[0]]] = \
                int(head[1])
    close()
    return out


class CodePageTrimmer:
    """Trims the clean mappings that were already there, the same, at the previous look.

    A mapping seen for the first time may be a library being loaded right now: the dynamic
    loader maps its whole span read-only, then maps the writable segment over part of it and
    writes relocations there. Dropping pages over a stale read-only range could hit those, so
    a range is trimmed only once it has stood unchanged between two looks (seconds apart;
    Python never unloads a library, so a range that stood stays that library's)."""

    def __init__(self) -> None:
        self._seen: set[tuple[int, int]] = set()

    def trim(self) -> int:
        """Drop the pages of the clean read-only file mappings that stood since the previous
        call; KiB dropped (0 on the first call, and off Linux)."""
        if not sys.platform.startswith("linux"):
            return 0
        found = clean_file_mappings(Path("/proc/self/smaps").read_text())
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        dropped = 0
        for lo, hi, kib in found:
            if (lo, hi) in self._seen and libc.madvise(lo, hi - lo, MADV_DONTNEED) == 0:
                dropped += kib
        self._seen = {(lo, hi) for lo, hi, _ in found}
        return dropped


async def trim_periodically(period_s: float = TRIM_EVERY_S, first_s: float = 10.0) -> None:
    """Look now, trim `first_s` later and then every `period_s` until cancelled, off the
    event loop's thread (reading smaps takes a few ms)."""
    trimmer = CodePageTrimmer()
    await asyncio.to_thread(trimmer.trim)
    await asyncio.sleep(first_s)
    while True:
        await asyncio.to_thread(trimmer.trim)
        await asyncio.sleep(period_s)
