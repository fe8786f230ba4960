"""The query head (aggregator/store/head.py): cold and warm query cost, and what it adds to a write.

    python bench/query_head.py [--hosts 100] [--minutes 60] [--reps 31]

Writes bench/storage.py's `Fleet` (hosts x 60 series, one tick per 10 s) into a temp store, rolls
it up, then measures in one process, alternating the two sides:

* the first query (the head's load from the file, writes held meanwhile) and the load alone;
* one series and the fleet average (`group_by=*`) through the head and through DuckDB alone
  (the same `Store`, head detached), medians of `--reps` calls;
* `Store.write` of one tick for every host with and without the head fed (medians).
The machine may be shared: compare the two sides of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from storage import Fleet  # noqa: E402

from legion.aggregator.config import StorageConfig  # noqa: E402
from legion.aggregator.store import IncomingBatch, Store  # noqa: E402
from legion.proto import MetricsBatch  # noqa: E402

TICK_MS = 10_000
ONE = {"metric": "system_cpu_usage_percent", "node": "host-001", "labels": {"cpu": "total"},
       "step_ms": 60_000, "agg": "avg"}
FLEET = {"metric": "system_cpu_usage_percent", "labels": {"cpu": "total"}, "step_ms": 300_000,
         "agg": "avg", "group_by": "*"}


def tick_batches(fleet: Fleet, ts: int, seq: int) -> list[IncomingBatch]:
    """One batch per host at `ts`."""
    values = fleet.tick()
    return [IncomingBatch(f"host-{h:03d}", 1, seq, MetricsBatch(
        fleet.names, fleet.label_sets, fleet.name_idx, fleet.label_idx, values[h],
        np.full(fleet.n, ts, np.int64)), ts) for h in range(fleet.hosts)]


def median_ms(fn: Any, reps: int) -> float:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--reps", type=int, default=31)
    ap.add_argument("--keep-db", type=Path, default=None, help="copy the database file here")
    args = ap.parse_args()
    fleet = Fleet(args.hosts, TICK_MS / 1000, seed=3)
    t0 = int(time.time() * 1000) // 3_600_000 * 3_600_000 - 3_600_000
    ticks = args.minutes * 60_000 // TICK_MS
    clock = {"ms": t0 + args.minutes * 60_000}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "h.duckdb", StorageConfig(
            rollup_interval_ms=10**9, maintenance_interval_secs=10**9),
            clock_ms=lambda: clock["ms"])
        try:
            seq = 0
            for i in range(0, ticks, 6):  # a minute per commit
                group = []
                for j in range(i, min(i + 6, ticks)):
                    seq += 1
                    group += tick_batches(fleet, t0 + j * TICK_MS, seq)
                store.write(group)
            store.roll_up(budget_s=60, include_open=True)
            head = store.head
            assert head is not None
            lo, end = t0, t0 + args.minutes * 60_000
            out: dict[str, Any] = {"hosts": args.hosts, "series": args.hosts * fleet.n,
                                   "minutes": args.minutes, "load_avg_before": os.getloadavg()}
            t = time.perf_counter()
            store.query(since_ms=lo, until_ms=end, **ONE)
            out["first_query_with_load_ms"] = (time.perf_counter() - t) * 1000
            out["head_mib"] = head.nbytes() / 2**20
            res: dict[str, list[float]] = {}
            for r in range(3):
                for side in (("head", "duckdb") if r % 2 == 0 else ("duckdb", "head")):
                    store.head = head if side == "head" else None
                    for name, q in (("one", ONE), ("fleet", FLEET)):
                        res.setdefault(f"{name}_{side}_ms", []).append(median_ms(
                            lambda q=q: store.query(since_ms=lo, until_ms=end, **q), args.reps))
            store.head = head
            with store.cursor() as cur:
                load = []
                for _ in range(3):
                    head.start = None
                    t = time.perf_counter()
                    head.load(cur, args.hosts * fleet.n + 1)
                    load.append((time.perf_counter() - t) * 1000)
            out["head_load_ms"] = statistics.median(load)
            for r in range(2 * args.reps):  # one tick per write, fed or not, alternating
                fed = r % 2 == 0
                store.head = head if fed else None
                clock["ms"] += TICK_MS
                batch = tick_batches(fleet, clock["ms"], seq + 1 + r)
                t = time.perf_counter()
                store.write(batch)
                res.setdefault(f"write_{'fed' if fed else 'unfed'}_ms", []).append(
                    (time.perf_counter() - t) * 1000)
            store.head = head
        finally:
            store.close()
        if args.keep_db is not None:
            shutil.copy(Path(tmp) / "h.duckdb", args.keep_db)
    out.update({k: statistics.median(v) for k, v in res.items()})
    out["rounds"] = res
    out["load_avg_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
