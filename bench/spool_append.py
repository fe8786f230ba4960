"""Agent spool append throughput (records/s, MB/s) against a bare-write baseline, same run.

    python bench/spool_append.py [--seconds 2] [--sizes 1024,8192,65536] [--sync-ms 500]

For each frame size, for `--seconds` each, in a temporary directory:
  * baseline: the same bytes appended with one unbuffered os.write per frame, fsync every
    `--sync-ms` (no header, crc, index or cap);
  * spool: `Spool.append` with the default cap (256 MiB; overflow drops the oldest segments, so
    the run is bounded in disk) and the given sync policy.
Prints records/s, MB/s and spool/baseline as a ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from legion.kernel.spool.spool import Spool


def _baseline(d: Path, frame: bytes, seconds: float, sync_s: float) -> tuple[int, float]:
    fd = os.open(d / "bare.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    n, t0 = 0, time.perf_counter()
    last_sync = t0
    end = t0 + seconds
    written = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for _ in range(64):
            os.write(fd, frame)
            n += 1
        written += 64 * len(frame)
        if now - last_sync >= sync_s:
            os.fsync(fd)
            last_sync = now
        if written > 256 << 20:  # stay bounded like the spool
            os.ftruncate(fd, 0)
            written = 0
    os.fsync(fd)
    os.close(fd)
    return n, time.perf_counter() - t0


def _spool(d: Path, frame: bytes, seconds: float, sync_ms: int) -> tuple[int, float, dict]:
    sp = Spool(d / "spool", 256 << 20, sync_ms, epoch=1)
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        for _ in range(64):
            n += 1
            sp.append(n, frame)
    sp.close()
    return n, time.perf_counter() - t0, sp.stats()


def main() -> None:
    """Run the benchmark and print one line per frame size."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sizes", default="1024,8192,65536")
    ap.add_argument("--sync-ms", type=int, default=500)
    args = ap.parse_args()
    print(f"sync_interval_ms={args.sync_ms}, {args.seconds:.1f} s per case")
    print(f"{'frame':>8} {'spool rec/s':>12} {'spool MB/s':>11} {'bare rec/s':>12} "
          f"{'bare MB/s':>10} {'ratio':>6}  dropped")
    for size in (int(x) for x in args.sizes.split(",")):
        frame = os.urandom(size)
        with tempfile.TemporaryDirectory() as tmp:
            bn, bt = _baseline(Path(tmp), frame, args.seconds, args.sync_ms / 1000)
        with tempfile.TemporaryDirectory() as tmp:
            sn, st, stats = _spool(Path(tmp), frame, args.seconds, args.sync_ms)
        b_rate, s_rate = bn / bt, sn / st
        print(f"{size:>8} {s_rate:>12,.0f} {s_rate * size / 1e6:>11.1f} {b_rate:>12,.0f} "
              f"{b_rate * size / 1e6:>10.1f} {s_rate / b_rate:>6.2f}  "
              f"{stats['batches_dropped_total']}")


if __name__ == "__main__":
    main()
