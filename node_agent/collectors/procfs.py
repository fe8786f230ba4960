"""The host collectors' default source: psutil's API, the part they call, read from /proc directly.

psutil opens each file anew, parses every line and field, and wraps the result in layers of
helpers; per one-second tick that was most of the agent's CPU (issue 17, docs/peers.md "Agent").
`ProcSource` keeps each file open and re-reads it with one `pread` at offset 0 (a seq_file then
renders afresh), finds the few keys it needs with `bytes.find`, and returns psutil's field names
and units, so the collectors and their recorded-psutil tests do not change. Values are psutil's
(tests/node_agent/test_procfs.py compares both on the machine that runs it):

* `cpu_times(percpu=True)`: the `cpuN` lines of /proc/stat in seconds (clock ticks / CLK_TCK);
* `virtual_memory()` / `swap_memory()`: psutil 7's formulas over /proc/meminfo (used = total -
  available, percent rounded to 0.1), swap in/out from /proc/vmstat's pswpin/pswpout × 4 KiB;
  `swap_memory()` called within `MEMINFO_REUSE_SECS` after `virtual_memory()` parses the same
  read of /proc/meminfo (one snapshot per tick, where psutil reads the file twice);
* `disk_io_counters(perdisk=True)` / `net_io_counters(pernic=True)`: /proc/diskstats (sectors of
  512 bytes) and /proc/net/dev; with `nowrap`, a counter that went down continues from where it
  was, as psutil does (`psutil._common._WrapNumbers`), until the device disappears;
* `boot_time()`: /proc/stat's btime, computed from the two clocks it is made of (no read);
* `pids()`: the numeric entries of /proc, listed again only when a task was created or reaped;
* `disk_partitions()` / `disk_usage()`: /proc/self/mounts with psutil's physical-filesystem
  rule, and statvfs with psutil's arithmetic; `getloadavg()` is `os.getloadavg`, so the agent
  process no longer imports psutil at all (~1.6 MiB of RSS).

Open files are closed by `close()` (the collector's own `close()`); one source per collector.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import namedtuple
from typing import Any

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size
SWAP_PAGE_BYTES = 4 * 1024  # psutil's factor for pswpin/pswpout
MEMINFO_REUSE_SECS = 0.1  # swap_memory() right after virtual_memory() uses the same read

scputimes = namedtuple("scputimes", "user nice system idle iowait irq softirq steal guest "
                                    "guest_nice")
svmem = namedtuple("svmem", "total available percent used free active inactive buffers cached "
                            "shared slab")
sswap = namedtuple("sswap", "total used free percent sin sout")
sdiskio = namedtuple("sdiskio", "read_count write_count read_bytes write_bytes read_time "
                                "write_time read_merged_count write_merged_count busy_time")
sdiskpart = namedtuple("sdiskpart", "device mountpoint fstype opts")
sdiskusage = namedtuple("sdiskusage", "total used free percent")
snetio = namedtuple("snetio", "bytes_sent bytes_recv packets_sent packets_recv errin errout "
                              "dropin dropout")


class ProcFile:
    """One /proc file kept open; `read()` returns its whole current content."""

    __slots__ = ("_fd", "_path", "_size")

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._size = 16384

    def read(self) -> bytes:
        """The file's content now (a fresh rendering: pread at offset 0)."""
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        while True:
            data = os.pread(self._fd, self._size, 0)
            if len(data) < self._size:
                return data
            self._size *= 2  # it may have been cut: read again with room to spare

    def close(self) -> None:
        """Close the file (idempotent; a later `read()` opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _kib(data: bytes, key: bytes) -> int | None:
    """Bytes of a `Key:  N kB` line of /proc/meminfo, None when the key is absent."""
    i = data.find(key)
    if i < 0:
        return None
    start = i + len(key)
    return int(data[start:data.index(b"k", start)]) * 1024


def _counter(data: bytes, key: bytes) -> int | None:
    """N of a `key N` line (/proc/vmstat), None when absent."""
    i = data.find(key)
    if i < 0:
        return None
    start = i + len(key)
    end = data.find(b"\n", start)
    return int(data[start:end if end >= 0 else len(data)])


def _unescape(field: str) -> str:
    r"""A /proc/self/mounts field with the kernel's octal escapes (\040 for a space) undone."""
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class _NoWrap:
    """psutil's `nowrap`: a counter that went down continues from where it was."""

    __slots__ = ("_last", "_offset")

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, ...]] = {}
        self._offset: dict[str, list[int]] = {}

    def fold(self, raw: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """`raw` with every decrease since the last call folded in; forgets vanished devices."""
        last, offset = self._last, self._offset
        out = {}
        for name, values in raw.items():
            before = last.get(name)
            if before is not None and any(map(int.__lt__, values, before)):
                add = offset.setdefault(name, [0] * len(values))
                for i, (now, was) in enumerate(zip(values, before, strict=True)):
                    if now < was:
                        add[i] += was
            add_now = offset.get(name)
            out[name] = values if add_now is None else tuple(map(int.__add__, values, add_now))
        for gone in last.keys() - raw.keys():
            offset.pop(gone, None)
        self._last = raw
        return out


class ProcSource:
    """The psutil functions the host collectors call, answered from /proc (see module doc)."""

    def __init__(self, proc: str = PROC) -> None:
        self._proc = proc
        self._files: dict[str, ProcFile] = {}
        self._disk_wrap = _NoWrap()
        self._net_wrap = _NoWrap()
        self._meminfo: tuple[float, bytes] = (0.0, b"")  # virtual_memory()'s read, for swap
        self._init_pid_ns: bool | None = None  # known after the first pids()
        self._pids: list[int] = []
        self._pids_marker: bytes | None = None

    def _read(self, name: str) -> bytes:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = ProcFile(f"{self._proc}/{name}")
        return f.read()

    def close(self) -> None:
        """Close every file this source opened (idempotent)."""
        for f in self._files.values():
            f.close()
        self._files.clear()

    # ---- CPU -------------------------------------------------------------------------------
    def cpu_times(self, percpu: bool = False) -> Any:
        """Per-CPU times (psutil's `scputimes`) in seconds; all CPUs summed without `percpu`."""
        data = self._read("stat")
        tick = float(CLOCK_TICKS)
        out = []
        for line in data.split(b"\n"):
            if not line.startswith(b"cpu"):
                break  # the cpu and cpuN lines come first, in a block
            fields = line.split()[1:11]
            out.append(scputimes(*[int(x) / tick for x in fields]))
        return out[1:] if percpu else out[0]

    # ---- memory ----------------------------------------------------------------------------
    def virtual_memory(self) -> Any:
        """psutil 7's `svmem` from /proc/meminfo."""
        d = self._read("meminfo")
        self._meminfo = (time.monotonic(), d)
        total = _kib(d, b"MemTotal:") or 0
        free = _kib(d, b"\nMemFree:") or 0
        buffers = _kib(d, b"\nBuffers:") or 0
        cached = (_kib(d, b"\nCached:") or 0) + (_kib(d, b"\nSReclaimable:") or 0)
        avail = _kib(d, b"\nMemAvailable:")
        if not avail:  # kernels before 3.14: psutil's estimate would need /proc/zoneinfo
            avail = free + buffers + cached
        if avail > total:  # psutil: a container's LXCFS may say so
            avail = free
        percent = round((total - avail) / total * 100, 1) if total else 0.0
        return svmem(total, avail, percent, total - avail, free, _kib(d, b"\nActive:") or 0,
                     _kib(d, b"\nInactive:") or 0, buffers, cached,
                     _kib(d, b"\nShmem:") or 0, _kib(d, b"\nSlab:") or 0)

    def swap_memory(self) -> Any:
        """psutil's `sswap` from /proc/meminfo and /proc/vmstat."""
        read_at, d = self._meminfo
        self._meminfo = (0.0, b"")
        if time.monotonic() - read_at > MEMINFO_REUSE_SECS:
            d = self._read("meminfo")
        total = _kib(d, b"\nSwapTotal:") or 0
        free = _kib(d, b"\nSwapFree:") or 0
        used = total - free
        percent = round(used / total * 100, 1) if total else 0.0
        v = self._read("vmstat")
        sin = (_counter(v, b"\npswpin ") or 0) * SWAP_PAGE_BYTES
        sout = (_counter(v, b"\npswpout ") or 0) * SWAP_PAGE_BYTES
        return sswap(total, used, free, percent, sin, sout)

    # ---- block devices and interfaces ------------------------------------------------------
    def disk_io_counters(self, perdisk: bool = True, nowrap: bool = True) -> dict[str, Any]:
        """{device: psutil's `sdiskio`} for every line of /proc/diskstats (`perdisk` only)."""
        if not perdisk:
            raise ValueError("only perdisk=True is read from /proc here")
        raw: dict[str, tuple[int, ...]] = {}
        for line in self._read("diskstats").split(b"\n"):
            f = line.split()
            n = len(f)
            if n >= 14:  # name at 2; reads merged sectors ms writes merged sectors ms - io ms
                r, rm, rs, rt, w, wm, ws, wt, _inflight, busy = map(int, f[3:13])
                raw[f[2].decode()] = (r, w, rs * SECTOR_BYTES, ws * SECTOR_BYTES, rt, wt, rm, wm,
                                      busy)
            elif n == 7:  # a partition on kernels before 2.6.25
                r, rs, w, ws = map(int, f[3:7])
                raw[f[2].decode()] = (r, w, rs * SECTOR_BYTES, ws * SECTOR_BYTES, 0, 0, 0, 0, 0)
        if nowrap:
            raw = self._disk_wrap.fold(raw)
        return {k: sdiskio._make(v) for k, v in raw.items()}

    def net_io_counters(self, pernic: bool = True, nowrap: bool = True) -> dict[str, Any]:
        """{interface: psutil's `snetio`} from /proc/net/dev (`pernic` only)."""
        if not pernic:
            raise ValueError("only pernic=True is read from /proc here")
        raw: dict[str, tuple[int, ...]] = {}
        for line in self._read("net/dev").split(b"\n")[2:]:
            name, sep, rest = line.rpartition(b":")
            if not sep:
                continue
            f = rest.split()
            rx_b, rx_p, rx_e, rx_d = map(int, f[0:4])
            tx_b, tx_p, tx_e, tx_d = map(int, f[8:12])
            raw[name.strip().decode()] = (tx_b, rx_b, tx_p, rx_p, rx_e, tx_e, rx_d, tx_d)
        if nowrap:
            raw = self._net_wrap.fold(raw)
        return {k: snetio._make(v) for k, v in raw.items()}

    # ---- processes, boot time, load --------------------------------------------------------
    def pids(self) -> list[int]:
        """Every process id under /proc (threads are not listed there).

        Listing /proc costs the kernel a lookup per process, the dearest read of a tick. In the
        initial pid namespace /proc/loadavg's last pid moves with every task created anywhere
        and its task count with every one reaped: when neither moved since the last listing, no
        process came or went, and that listing is returned again (exact, not a sample).
        """
        marker = self._task_marker()
        if marker is None or marker != self._pids_marker:
            self._pids = [int(x) for x in os.listdir(self._proc) if x.isdigit()]
            self._pids_marker = marker  # read before listing: a fork meanwhile moves it
        return list(self._pids)

    def _task_marker(self) -> bytes | None:
        """(tasks, last pid) of /proc/loadavg; None outside the initial pid namespace."""
        if self._init_pid_ns is None:
            try:
                with open(f"{self._proc}/self/status", "rb") as f:
                    nspid = [ln for ln in f.read().split(b"\n") if ln.startswith(b"NSpid:")]
                self._init_pid_ns = len(nspid) == 1 and len(nspid[0].split()) == 2
            except OSError:
                self._init_pid_ns = False
        if not self._init_pid_ns:
            return None
        running_tasks_last = self._read("loadavg").split(b" ", 3)[3]  # "3/163 20237\n"
        return running_tasks_last.partition(b"/")[2]  # the running count moves all the time

    def boot_time(self) -> float:
        """/proc/stat's btime without reading it: the kernel's btime is the whole seconds of
        wall clock minus boot clock (`getboottime64`), so a stepped wall clock moves both."""
        return float(math.floor(time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)))

    # ---- filesystems -----------------------------------------------------------------------
    def disk_partitions(self, all: bool = False) -> list[Any]:  # noqa: A002 - psutil's name
        """psutil's `sdiskpart` per line of /proc/self/mounts; without `all`, only devices with
        a filesystem type /proc/filesystems does not mark `nodev` (psutil's rule, zfs too)."""
        physical = None
        if not all:
            physical = {"zfs"}
            for line in self._read("filesystems").decode().splitlines():
                kind, _, name = line.partition("\t")
                if kind != "nodev":
                    physical.add(name.strip())
        out = []
        for line in self._read("self/mounts").decode(errors="surrogateescape").splitlines():
            f = line.split()
            if len(f) < 4:
                continue
            device, mnt, fstype, opts = (_unescape(x) for x in f[:4])
            device = "" if device == "none" else device
            if physical is not None and (not device or fstype not in physical):
                continue
            out.append(sdiskpart(device, mnt, fstype, opts))
        return out

    def disk_usage(self, path: str) -> Any:
        """psutil's `sdiskusage` of the filesystem at `path` (one statvfs)."""
        st = os.statvfs(path)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize  # what a user may still write
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        seen = used + free  # without the root reserve, as df and psutil count
        return sdiskusage(total, used, free, round(used / seen * 100, 1) if seen else 0.0)

    def getloadavg(self) -> tuple[float, float, float]:
        """1, 5 and 15 minute load averages (the C library reads /proc/loadavg)."""
        return os.getloadavg()
