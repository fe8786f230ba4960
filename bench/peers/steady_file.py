"""The DuckDB file in steady state: hour after hour of ingest, each settled hour packed.

    python bench/peers/steady_file.py [--hosts 10] [--hours 4]

The peers bench's storage row loads once and packs once: the worst case, since the blocks the
packed raw rows free stay in the file. Here hours follow each other as in service (a minute per
commit, rollups, every settled hour packed by maintenance rounds, checkpoint), and after each hour
it prints bytes per point of the chunk payload, the used blocks (the data the file holds), the
free blocks and the whole file, then the free bytes each hour leaves and what they come to
against the data held after `raw_retention_hours` (48 by default), assuming each further hour
adds what the last one added.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/
sys.path.insert(0, str(HERE.parents[1]))  # the repository

from storage import Fleet  # noqa: E402

HOUR_MS = 3_600_000


def main(argv: list[str] | None = None) -> int:
    from legion.aggregator.store import IncomingBatch, Store
    from legion.aggregator.config import StorageConfig
    from legion.proto import MetricsBatch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--hours", type=int, default=4)
    args = ap.parse_args(argv)
    fleet = Fleet(args.hosts, 1.0, seed=3)
    t0 = (int(time.time() * 1000) // HOUR_MS - args.hours - 2) * HOUR_MS
    work = Path(tempfile.mkdtemp(prefix="legion-steady-"))
    db = work / "legion.duckdb"
    clock = {"ms": t0}
    cfg = StorageConfig(rollup_interval_ms=10**9, maintenance_interval_secs=10**9)
    store = Store(db, cfg, clock_ms=lambda: clock["ms"])
    n = seq = 0
    used_by_hour: list[tuple[int, int, int]] = []  # (points, used bytes, free bytes)
    try:
        for hour in range(args.hours):
            for _ in range(60):
                group = []
                for _ in range(60):
                    seq += 1
                    ts = t0 + (seq - 1) * 1000
                    vals = fleet.tick()
                    group += [IncomingBatch(f"host-{k:03d}", 1, seq, MetricsBatch(
                        fleet.names, fleet.label_sets, fleet.name_idx, fleet.label_idx, vals[k],
                        np.full(fleet.n, ts, np.int64)), ts) for k in range(args.hosts)]
                    n += fleet.n * args.hosts
                clock["ms"] = ts + 1000
                store.write(group)
                store.roll_up(budget_s=10)
            clock["ms"] += 5 * 60_000  # the hour just written settles
            for _ in range(20_000):
                if not store.stats()["rows"]["points"]:
                    break
                store.maintain()
            store.checkpoint()
            st = store.stats()["rows"]
            used, free = store._con.execute(  # noqa: SLF001 - the bench reads block counts
                "SELECT block_size * used_blocks, block_size * free_blocks FROM "
                "pragma_database_size() WHERE database_name = 'legion'").fetchall()[0]
            used_by_hour.append((n, int(used), int(free)))
            print(f"hour {hour + 1}: {n / 1e6:.2f} M points, raw left {st['points']}; B/point: "
                  f"chunks {st.get('chunk_bytes', 0) / n:.2f}, used {used / n:.2f}, free "
                  f"{free / n:.2f}, file {db.stat().st_size / n:.2f} (free {free / 2**20:.1f} "
                  f"MiB, file {db.stat().st_size / 2**20:.1f} MiB)", flush=True)
    finally:
        store.close()
    if len(used_by_hour) >= 2:
        (_, u1, _), (_, u2, free) = used_by_hour[-2], used_by_hour[-1]
        hours = cfg.raw_retention_hours
        held = u2 + (u2 - u1) * (hours - args.hours)
        print(f"each hour adds {(u2 - u1) / 2**20:.1f} MiB of data and leaves {free / 2**20:.1f} "
              f"MiB free (the next hour's raw rows reuse it); after {hours:.0f} h: file / data "
              f"held = {(held + free) / held:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
