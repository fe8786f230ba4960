"""How the query head's memory grows at one agent once a dashboard's query has loaded it
(issue 17).

    python bench/peers/head_growth.py [--hours 6] [--series 116]

A real Store on a temp file, on a fixed clock: one write per minute of `--series` gauges (one
agent's tick; the head keeps one block per minute, whatever the points in it), one stepped
query to load the head, then `--hours` of minutes. Prints, every 2 hours, the head's ring size,
the minutes held and the process' anonymous memory growth since the load. Compare two builds
by running it from each one's venv.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import IncomingBatch, Store
from legion.proto import MetricsBatch, Sample

T0 = 1_700_000_000_000 // 3_600_000 * 3_600_000
MINUTE_MS = 60_000


def anon_mib() -> float:
    """This process' anonymous memory (smaps_rollup), MiB."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=int, default=6)
    ap.add_argument("--series", type=int, default=116)
    args = ap.parse_args(argv)
    clock = {"ms": T0 + MINUTE_MS}
    store = Store(Path(tempfile.mkdtemp(prefix="legion-head-growth-")) / "h.duckdb",
                  StorageConfig(rollup_interval_ms=10**9, maintenance_interval_secs=10**9),
                  clock_ms=lambda: clock["ms"])

    def tick(seq: int, ts: int) -> IncomingBatch:
        samples = [Sample(f"m_{i}", (), float(i), ts) for i in range(args.series)]
        return IncomingBatch("n1", 1, seq, MetricsBatch.from_samples(samples), ts)

    try:
        store.write([tick(1, T0)])
        store.roll_up(budget_s=30, include_open=True)
        store.query("m_1", since_ms=T0, step_ms=MINUTE_MS)  # a dashboard's query: loads it
        head = store.head
        assert head is not None and head.start is not None
        a0 = anon_mib()
        for m in range(1, args.hours * 60 + 1):
            clock["ms"] = T0 + (m + 1) * MINUTE_MS
            store.write([tick(m + 1, T0 + m * MINUTE_MS)])
            if m % 120 == 0:
                print(f"{m // 60:3d} h: ring {head._ring.nbytes / 2**20:5.1f} MiB "  # noqa: SLF001
                      f"({head._ring.shape[1]} rows a minute), {len(head._minutes)} "  # noqa: SLF001
                      f"minutes held, anonymous {anon_mib() - a0:+.1f} MiB", flush=True)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
