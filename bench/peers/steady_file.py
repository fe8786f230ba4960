"""The DuckDB file in steady state, measured: hours of ingest until retention deletes as much as
each hour adds.

    python bench/peers/steady_file.py [--hosts 10] [--hours 6] [--raw-hours 2]
        [--rollup-hours 3] [--commit-secs 5] [--block-size BYTES] [--window-min M] [--vm]
        [--no-idle-checkpoint | --idle-wal-kib KIB]

The peers bench's storage row loads once and packs once: the worst case, since the blocks the
packed raw rows free stay in the file. Here hours follow each other as in service, through the real
Store with the real retention keys (`raw_retention_hours`, `rollup_1m_retention_days`,
`rollup_1h_retention_days`; short by default so that steady state comes within the run) and its
own timers on a simulated clock: a write per `--commit-secs` of data, each running the light round
or maintenance round that is due (rollups, packing, retention, paced checkpoints), as in service.
After each hour it prints what the file holds (raw points, chunk payload, used blocks) against the
file and WAL on disk, and at the end the stall a write saw (the write plus the round it ran).
`--block-size` creates the file with that DuckDB block size first (the before/after of
`schema.NEW_FILE_BLOCK_SIZE`), `--window-min` sets `packing.WINDOW_MS` (before/after of the
window); `--vm` imports the raw points held at the end into VictoriaMetrics and prints its `du`.
The WAL is sampled after every write (its mean and max per hour, and over the run);
`--no-idle-checkpoint` turns off the checkpoint an idle writer makes after its round
(`store/idle_checkpoint.py`), for the before/after, `--idle-wal-kib` sets its WAL threshold
(`CHECKPOINT_IDLE_WAL`). The simulated clock makes the writer idle
(a write takes no simulated time): the low-load service case.
"""

from __future__ import annotations

import argparse
import shutil
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
    """Raw points held, chunk payload, used and free blocks, file and WAL size (bytes)."""
    st = store.stats()["rows"]  # type: ignore[attr-defined]
    bs, used, free = store._con.execute(  # type: ignore[attr-defined] # noqa: SLF001
        "SELECT block_size, block_size * used_blocks, block_size * free_blocks FROM "
        "pragma_database_size() WHERE database_name = 'legion'").fetchall()[0]
    wal = Path(str(db) + ".wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    return {"raw_points": st["raw_points"], "chunk_bytes": st["chunk_bytes"], "used": used,
            "free": free, "file": db.stat().st_size, "block_size": bs, "wal": wal_bytes,
            "disk": db.stat().st_size + wal_bytes, "points": st["points"],
            "rollup_1m": st["rollup_1m"], "batches": st["batches"],
            "batch_runs": st["batch_runs"],
            "chunk_tables": st["chunk_tables"]}


def main(argv: list[str] | None = None) -> int:
    from legion.aggregator.config import StorageConfig
    from legion.aggregator.store import IncomingBatch, Store, packing
    from legion.proto import MetricsBatch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--hours", type=int, default=6)
    ap.add_argument("--raw-hours", type=float, default=2.0, help="raw_retention_hours")
    ap.add_argument("--rollup-hours", type=float, default=3.0,
                    help="rollup_1m/1h_retention_days, in hours")
    ap.add_argument("--block-size", type=int, default=0, help="create the file with this")
    ap.add_argument("--commit-secs", type=int, default=5, help="seconds of data per write")
    ap.add_argument("--window-min", type=float, default=0,
                    help="packing window in minutes (default packing.WINDOW_MS)")
    ap.add_argument("--vm", action="store_true", help="VictoriaMetrics' du on the held points")
    ap.add_argument("--no-idle-checkpoint", action="store_true",
                    help="no checkpoint by WAL size after an idle writer's round (the before)")
    ap.add_argument("--idle-wal-kib", type=int, default=0,
                    help="WAL threshold of that checkpoint (default CHECKPOINT_IDLE_WAL)")
    args = ap.parse_args(argv)
    import legion.aggregator.store.store as store_module

    if args.no_idle_checkpoint:
        store_module.CHECKPOINT_IDLE_WAL = 1 << 62
    elif args.idle_wal_kib:
        store_module.CHECKPOINT_IDLE_WAL = args.idle_wal_kib << 10
    if args.window_min:
        packing.WINDOW_MS = int(args.window_min * 60_000)
    fleet = Fleet(args.hosts, 1.0, seed=3)
    t0 = (int(time.time() * 1000) // HOUR_MS - args.hours - 2) * HOUR_MS
    work = Path(tempfile.mkdtemp(prefix="legion-steady-"))
    db = work / "legion.duckdb"
    if args.block_size:
        create_file(db, args.block_size)
    clock = {"ms": t0}
    days = args.rollup_hours / 24
    # Service timers (light round every rollup_interval_ms, maintenance every
    # maintenance_interval_secs) run inside `write` on the store's clock, as in service.
    cfg = StorageConfig(raw_retention_hours=args.raw_hours, rollup_1m_retention_days=days,
                        rollup_1h_retention_days=days)
    store = Store(db, cfg, clock_ms=lambda: clock["ms"])
    kept: deque[tuple[int, np.ndarray]] = deque(maxlen=int(np.ceil(args.raw_hours)) + 2)
    seq = 0
    writes_s: list[float] = []
    wal_all: list[int] = []
    wal_path = Path(str(db) + ".wal")
    s: dict[str, float] = {}
    try:
        for hour in range(args.hours):
            ticks = []
            wal_hour: list[int] = []
            for _ in range(3600 // args.commit_secs):
                group = []
                for _ in range(args.commit_secs):
                    seq += 1
                    ts = t0 + (seq - 1) * 1000
                    vals = fleet.tick()
                    ticks.append(vals.copy())
                    group += [IncomingBatch(f"host-{k:03d}", 1, seq, MetricsBatch(
                        fleet.names, fleet.label_sets, fleet.name_idx, fleet.label_idx, vals[k],
                        np.full(fleet.n, ts, np.int64)), ts) for k in range(args.hosts)]
                clock["ms"] = ts + 1000
                t = time.monotonic()
                store.write(group)  # and whatever round is due: the stall ingest sees
                writes_s.append(time.monotonic() - t)
                wal_hour.append(wal_path.stat().st_size if wal_path.exists() else 0)
            wal_all += wal_hour
            kept.append((t0 + hour * HOUR_MS, np.stack(ticks)))
            s = file_state(store, db)
            n = max(s["raw_points"], 1)
            print(f"hour {hour + 1}: raw held {n / 1e6:.2f} M points ({s['chunk_tables']} chunk "
                  f"tables, unpacked {s['points']}, 1m rows {s['rollup_1m']}, batches "
                  f"{s['batches']}, runs {s['batch_runs']}); B/point held: chunks "
                  f"{s['chunk_bytes'] / n:.2f}, used "
                  f"{s['used'] / n:.2f}, on disk {s['disk'] / n:.2f}; MiB: used "
                  f"{s['used'] / 2**20:.1f}, free {s['free'] / 2**20:.1f}, file "
                  f"{s['file'] / 2**20:.1f}, WAL {s['wal'] / 2**20:.1f} (this hour mean "
                  f"{np.mean(wal_hour) / 2**20:.2f}, max {max(wal_hour) / 2**20:.2f}); on disk / "
                  f"used {s['disk'] / max(s['used'], 1):.2f}", flush=True)
    finally:
        store.close()
    writes_s.sort()
    print(f"block size {s['block_size']}, packing window {packing.WINDOW_MS // 60_000} min; "
          f"{len(writes_s)} writes of {args.commit_secs} s of data, each with the round due: "
          f"p50 {writes_s[len(writes_s) // 2] * 1000:.0f} ms, p99 "
          f"{writes_s[int(len(writes_s) * 0.99)] * 1000:.0f} ms, max {writes_s[-1] * 1000:.0f} "
          f"ms (maintenance_budget_ms {cfg.maintenance_budget_ms})")
    wal_all.sort()
    idle = ("off" if args.no_idle_checkpoint
            else f"from {store_module.CHECKPOINT_IDLE_WAL >> 10} KiB")
    print(f"WAL after each write, MiB: mean {np.mean(wal_all) / 2**20:.2f}, p50 "
          f"{wal_all[len(wal_all) // 2] / 2**20:.2f}, p99 "
          f"{wal_all[int(len(wal_all) * 0.99)] / 2**20:.2f}, max {wal_all[-1] / 2**20:.2f} "
          f"(idle checkpoint {idle})")
    try:
        if args.vm:
            vm_du(work, fleet, kept, s["raw_points"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
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
