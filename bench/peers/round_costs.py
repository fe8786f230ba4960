"""The writer thread's CPU per minute at one agent, split by what `Store.write` ran (issue 17).

    python bench/peers/round_costs.py [--minutes 20] [--series 116] [--gather-s 3]

A real Store on a temp file with the default storage keys, on a simulated clock: every
`--gather-s` seconds one write of that many agent batches (one per second, `--series` gauges
each), as the ingest writer commits them at one agent. Each write's thread CPU is charged to
the commit alone, a commit with a light round, or a commit with a maintenance round (whose
parts, wall ms from its report, are printed too). DuckDB's worker threads are not counted.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store
from legion.proto import MetricsBatch, Sample, canonical_labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=20)
    ap.add_argument("--series", type=int, default=116)
    ap.add_argument("--gather-s", type=int, default=3)
    args = ap.parse_args(argv)
    t0 = int(time.time() * 1000) // 60_000 * 60_000
    clock = {"ms": t0}
    store = Store(Path(tempfile.mkdtemp(prefix="legion-round-costs-")) / "r.duckdb",
                  StorageConfig(), clock_ms=lambda: clock["ms"])
    parts: dict[str, list[float]] = collections.defaultdict(list)
    maintain = store.maintain

    def measured_maintain(budget_s: float | None = None) -> dict[str, object]:
        report = maintain(budget_s)
        for part, ms in report["ms"].items():
            parts[part].append(ms)
        return report

    store.maintain = measured_maintain  # type: ignore[method-assign]

    def tick(seq: int, ts: int) -> IncomingBatch:
        samples = [Sample(f"m_{i % 20}", canonical_labels({"i": str(i)}), float(i * seq % 97), ts)
                   for i in range(args.series)]
        return IncomingBatch("n1", 1, seq, MetricsBatch.from_samples(samples), ts)

    cpu: dict[str, list[float]] = {"commit": [], "light": [], "maintenance": []}
    seq = 0
    try:
        for step in range(args.minutes * 60 // args.gather_s):
            clock["ms"] = t0 + step * args.gather_s * 1000
            batches = []
            for k in range(args.gather_s):
                seq += 1
                batches.append(tick(seq, clock["ms"] - (args.gather_s - 1 - k) * 1000))
            light, maint = store._next_rollup, store._next_maintenance  # noqa: SLF001
            t = time.thread_time()
            store.write(batches)
            ms = (time.thread_time() - t) * 1000
            kind = ("maintenance" if store._next_maintenance != maint  # noqa: SLF001
                    else "light" if store._next_rollup != light else "commit")  # noqa: SLF001
            cpu[kind].append(ms)
    finally:
        store.close()
    commit = statistics.median(cpu["commit"])
    for kind, v in cpu.items():
        print(f"{kind:<12} {len(v):4d} writes, median {statistics.median(v):6.2f} ms, "
              f"{sum(v) / args.minutes:6.1f} ms CPU per minute "
              f"({(sum(v) - commit * len(v)) / args.minutes:6.1f} beyond the commit)")
    print("maintenance parts (wall ms, median): " + ", ".join(
        f"{p} {statistics.median(v):.1f}" for p, v in parts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
