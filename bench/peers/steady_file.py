"""The DuckDB file in steady state, measured: hours of ingest until retention deletes as much as
each hour adds.

    python bench/peers/steady_file.py [--hosts 10] [--hours 6] [--raw-hours 2]
        [--rollup-hours 3] [--block-size BYTES] [--vm]

The peers bench's storage row loads once and packs once: the worst case, since the blocks the
packed raw rows free stay in the file. Here hours follow each other as in service, through the real
Store with the real retention keys (`raw_retention_hours`, `rollup_1m_retention_days`,
`rollup_1h_retention_days` set short so that steady state comes within the run): a minute per
commit, rollups, then maintenance rounds on the clock 5 minutes past the hour (packing the settled
hour, retention deleting what expired), a checkpoint. After each hour it prints what the file holds
(raw points, chunk payload, used blocks) against the file on disk. `--block-size` creates the file
with that DuckDB block size first (the before/after of `schema.NEW_FILE_BLOCK_SIZE`); `--vm`
imports the raw points held at the end into VictoriaMetrics and prints its `du` on them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/
sys.path.insert(0, str(HERE.parents[1]))  # the repository

from storage import Fleet  # noqa: E402

HOUR_MS = 3_600_000


def create_file(db: Path, block_size: int) -> None:
    """An empty Legion database file with this DuckDB block size."""
    import duckdb

    from legion.aggregator.store.schema import ensure_schema

    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{db}' AS legion (BLOCK_SIZE {int(block_size)})")
        con.execute("USE legion")
        ensure_schema(con, str(db))
    finally:
        con.close()


def file_state(store: object, db: Path) -> dict[str, float]:
    """Raw points held, chunk payload, used and free blocks, file size (bytes)."""
    st = store.stats()["rows"]  # type: ignore[attr-defined]
    bs, used, free = store._con.execute(  # type: ignore[attr-defined] # noqa: SLF001
        "SELECT block_size, block_size * used_blocks, block_size * free_blocks FROM "
        "pragma_database_size() WHERE database_name = 'legion'").fetchall()[0]
    return {"raw_points": st["raw_points"], "chunk_bytes": st["chunk_bytes"], "used": used,
            "free": free, "file": db.stat().st_size, "block_size": bs,
            "rollup_1m": st["rollup_1m"], "batches": st["batches"],
            "chunk_tables": st["chunk_tables"]}


def main(argv: list[str] | None = None) -> int:
    from legion.aggregator.config import StorageConfig
    from legion.aggregator.store import IncomingBatch, Store
    from legion.proto import MetricsBatch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--hours", type=int, default=6)
    ap.add_argument("--raw-hours", type=float, default=2.0, help="raw_retention_hours")
    ap.add_argument("--rollup-hours", type=float, default=3.0,
                    help="rollup_1m/1h_retention_days, in hours")
    ap.add_argument("--block-size", type=int, default=0, help="create the file with this")
    ap.add_argument("--vm", action="store_true", help="VictoriaMetrics' du on the held points")
    args = ap.parse_args(argv)
    fleet = Fleet(args.hosts, 1.0, seed=3)
    t0 = (int(time.time() * 1000) // HOUR_MS - args.hours - 2) * HOUR_MS
    work = Path(tempfile.mkdtemp(prefix="legion-steady-"))
    db = work / "legion.duckdb"
    if args.block_size:
        create_file(db, args.block_size)
    clock = {"ms": t0}
    days = args.rollup_hours / 24
    cfg = StorageConfig(rollup_interval_ms=10**9, maintenance_interval_secs=10**9,
                        raw_retention_hours=args.raw_hours, rollup_1m_retention_days=days,
                        rollup_1h_retention_days=days)
    store = Store(db, cfg, clock_ms=lambda: clock["ms"])
    held_hours = int(np.ceil(args.raw_hours)) + 1
    kept: deque[tuple[int, np.ndarray]] = deque(maxlen=held_hours)  # (hour start, values)
    seq = 0
    rounds_s: list[float] = []
    try:
        for hour in range(args.hours):
            ticks = []
            for _ in range(60):
                group = []
                for _ in range(60):
                    seq += 1
                    ts = t0 + (seq - 1) * 1000
                    vals = fleet.tick()
                    ticks.append(vals.copy())
                    group += [IncomingBatch(f"host-{k:03d}", 1, seq, MetricsBatch(
                        fleet.names, fleet.label_sets, fleet.name_idx, fleet.label_idx, vals[k],
                        np.full(fleet.n, ts, np.int64)), ts) for k in range(args.hosts)]
                clock["ms"] = ts + 1000
                store.write(group)
                store.roll_up(budget_s=10)
            kept.append((t0 + hour * HOUR_MS, np.stack(ticks)))
            clock["ms"] += 5 * 60_000  # the hour just written settles
            for _ in range(20_000):  # maintenance rounds until nothing is left to do
                t = time.monotonic()
                rep = store.maintain()
                rounds_s.append(time.monotonic() - t)
                if not (rep["steps"] or rep["packed_points"] or rep["materialised"]
                        or rep["rolled_up_minutes"]) and not store.stats()["rows"]["points"]:
                    break
            clock["ms"] -= 5 * 60_000
            store.checkpoint()
            s = file_state(store, db)
            n = max(s["raw_points"], 1)
            print(f"hour {hour + 1}: raw held {n / 1e6:.2f} M points ({s['chunk_tables']} chunk "
                  f"tables, 1m rows {s['rollup_1m']}, batches {s['batches']}); B/point held: "
                  f"chunks {s['chunk_bytes'] / n:.2f}, used {s['used'] / n:.2f}, file "
                  f"{s['file'] / n:.2f}; MiB: used {s['used'] / 2**20:.1f}, free "
                  f"{s['free'] / 2**20:.1f}, file {s['file'] / 2**20:.1f}; file / used "
                  f"{s['file'] / max(s['used'], 1):.2f}", flush=True)
    finally:
        store.close()
    rounds_s.sort()
    print(f"block size {s['block_size']}; maintenance rounds {len(rounds_s)}, p50 "
          f"{rounds_s[len(rounds_s) // 2] * 1000:.0f} ms, max {rounds_s[-1] * 1000:.0f} ms "
          f"(budget {cfg.maintenance_budget_ms} ms)")
    if args.vm:
        vm_du(work, fleet, kept, s["raw_points"])
    return 0


def vm_du(work: Path, fleet: Fleet, kept: deque[tuple[int, np.ndarray]], legion_n: int) -> None:
    """Import the hours whose raw points Legion still holds into VictoriaMetrics; print `du`."""
    import data_rows as d
    import peers

    per_hour = kept[-1][1].size
    hours = max(1, round(legion_n / per_hour))
    kept = deque(list(kept)[-hours:])
    peer, url = peers.start_victoria_metrics(work)
    try:
        n = 0
        for start, values in kept:
            lines = d.vm_lines(fleet, values, start)
            for i in range(0, len(lines), 200):
                d.vm_post(url, b"\n".join(lines[i:i + 200]))
            n += values.size
        du = d.vm_flush_and_size(url, work / "vm-data")
    finally:
        peer.stop()
    print(f"VictoriaMetrics du on the last {len(kept)} hours ({n / 1e6:.2f} M points, Legion "
          f"holds {legion_n / 1e6:.2f} M raw): {du / n:.2f} B/point ({du / 2**20:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
