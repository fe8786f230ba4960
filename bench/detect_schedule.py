"""What detect scheduling costs the aggregator: raw points (`detect_step_secs` 0) against the
maxima of whole buckets (`detect_step_secs`, default 300), on the same store (issue 14).

Usage: `python bench/detect_schedule.py [--hosts 200] [--history-minutes 260]
                                        [--live-minutes 15] [--step 300] [--json]`

A real Store on a temp file holds `--hosts` hosts x the four watched host metrics (cpu total,
memory, disk, load1) sampled every second for `--history-minutes`. Then, for `--live-minutes`
of data time, every `analysis_interval` (5 s) one batch per host brings 5 s more, and each
scheduler makes its pass: the raw one (`watched.schedule_detect`, the path before this change,
the baseline) and the bucketed one (`bucketed.BucketedDetect.schedule`), each with its own
`JobBook`. Every job is answered by the real worker code (`mad`, not timed), so each pass sees
what a live bridge sees. Printed per scheduler: seconds inside its passes (cold first pass and
the live passes), jobs, rows sent, reads (raw: series read, up to 512 per statement;
bucketed: stepped queries); and bucketed / raw ratios.

Data times end at the wall clock's now (the raw scheduler dates a new series' history from it).
The machine may be shared: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legion.aggregator.analytics_bridge import JobBook  # noqa: E402
from legion.aggregator.analytics_bridge.bucketed import SETTLE_MS, BucketedDetect  # noqa: E402
from legion.aggregator.analytics_bridge.new_points import NewPoints  # noqa: E402
from legion.aggregator.analytics_bridge.watched import (  # noqa: E402
    WatchedSeries,
    schedule_detect,
    select_watched,
)
from legion.aggregator.store import IncomingBatch, Store  # noqa: E402
from legion.analytics.config import AnalyticsConfig  # noqa: E402
from legion.analytics.worker import process  # noqa: E402
from legion.proto import MetricsBatch, Sample  # noqa: E402
from legion.proto.jobs import decode_job, encode_result  # noqa: E402

METRICS = ("system_cpu_usage_percent", "system_memory_usage_percent",
           "system_disk_usage_percent", "system_load1")
PASS_SECS = 5  # analysis_interval's default


class Scheduler:
    """One scheduler with its own book, its time and what it sent."""

    def __init__(self, name: str, store: Store, step_s: int) -> None:
        self.name = name
        self.sent: list[bytes] = []
        self.book = JobBook(self.sent.append, timeout_secs=3600)
        self.acfg = AnalyticsConfig(detector="mad", detect_step_secs=step_s)
        self.news: NewPoints[WatchedSeries] = NewPoints(store, select_watched)
        self.known: dict[str, WatchedSeries] = {}
        self.bucketed = BucketedDetect(store, self.news, self.book, self.known,
                                       self.acfg) if step_s else None
        self.cold_s = 0.0
        self.live_s = 0.0
        self.passes = 0
        self.jobs = 0
        self.rows = 0

    def run_pass(self, now_ms: int) -> None:
        before = len(self.sent)
        t = time.perf_counter()
        left = 1
        while left:  # a pass is sliced by the budget: the slices make one pass here
            if self.bucketed is not None:
                left = self.bucketed.schedule(now_ms=now_ms)
            else:
                left = schedule_detect(self.news, self.book, self.known, self.acfg, 1.0)
        dt = time.perf_counter() - t
        if self.passes == 0:
            self.cold_s = dt
        else:
            self.live_s += dt
        self.passes += 1
        for frame in self.sent[before:]:
            job = decode_job(frame)
            self.jobs += 1
            self.rows += len(job.ts_ms)
            self.book.on_result(encode_result(process(job, "bench")))

    def statements(self) -> int:
        return (self.bucketed.queries if self.bucketed is not None
                else self.news.reads)  # raw: series read (512 per statement at most)

    def report(self) -> dict[str, Any]:
        return {"cold_pass_s": round(self.cold_s, 3), "live_passes_s": round(self.live_s, 3),
                "passes": self.passes, "jobs": self.jobs, "rows_sent": self.rows,
                "reads": self.statements()}


def write(store: Store, hosts: int, seconds: range, t0: int, seq: list[int],
          rng: np.random.Generator) -> None:
    """One batch per host with these seconds of the four metrics."""
    batches = []
    for h in range(hosts):
        vals = rng.normal(50, 5, size=(len(seconds), len(METRICS)))
        samples = [Sample(m, (), float(vals[i, j]), t0 + s * 1000)
                   for i, s in enumerate(seconds) for j, m in enumerate(METRICS)]
        seq[h] += 1
        batches.append(IncomingBatch(f"host-{h:04d}", 1, seq[h],
                                     MetricsBatch.from_samples(samples), t0 + seconds.stop * 1000))
    store.write(batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--history-minutes", type=int, default=260)
    ap.add_argument("--live-minutes", type=int, default=15)
    ap.add_argument("--step", type=int, default=300, help="detect_step_secs of the bucketed one")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    hist_s, live_s = args.history_minutes * 60, args.live_minutes * 60
    # data times end at now (+ the settle time, so the bucketed one's last bucket settles)
    t0 = (int(time.time() * 1000) - hist_s * 1000) // 1000 * 1000
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        try:
            seq = [0] * args.hosts
            t = time.perf_counter()
            for start in range(0, hist_s, 60):
                write(store, args.hosts, range(start, min(start + 60, hist_s)), t0, seq, rng)
                print(f"history {start // 60 + 1}/{args.history_minutes} min", end="\r",
                      file=sys.stderr, flush=True)
            print(f"history written in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            scheds = [Scheduler("raw", store, 0), Scheduler("bucketed", store, args.step)]
            for s in scheds:
                s.run_pass(t0 + hist_s * 1000 + SETTLE_MS)
            for k, start in enumerate(range(hist_s, hist_s + live_s, PASS_SECS)):
                write(store, args.hosts, range(start, start + PASS_SECS), t0, seq, rng)
                for s in scheds:
                    s.run_pass(t0 + (start + PASS_SECS) * 1000 + SETTLE_MS)
                print(f"live pass {k + 1}/{live_s // PASS_SECS}", end="\r", file=sys.stderr,
                      flush=True)
            print(file=sys.stderr)
        finally:
            store.close()
    raw, buck = (s.report() for s in scheds)
    out = {"hosts": args.hosts, "series": args.hosts * len(METRICS), "step_s": args.step,
           "history_minutes": args.history_minutes, "live_minutes": args.live_minutes,
           "raw": raw, "bucketed": buck,
           "ratio_live_s": round(buck["live_passes_s"] / max(raw["live_passes_s"], 1e-9), 4),
           "ratio_cold_s": round(buck["cold_pass_s"] / max(raw["cold_pass_s"], 1e-9), 4),
           "ratio_rows_sent": round(buck["rows_sent"] / max(raw["rows_sent"], 1), 4)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['series']} series ({args.hosts} hosts), {args.history_minutes} min history, "
          f"{args.live_minutes} min live in {PASS_SECS} s passes, bucket {args.step} s")
    print(f"{'':10} {'cold pass s':>12} {'live passes s':>14} {'jobs':>8} {'rows sent':>10} "
          f"{'reads':>8}")
    for name, r in (("raw", raw), ("bucketed", buck)):
        print(f"{name:10} {r['cold_pass_s']:12.3f} {r['live_passes_s']:14.3f} {r['jobs']:8d} "
              f"{r['rows_sent']:10d} {r['reads']:8d}")
    print(f"bucketed / raw: live time {out['ratio_live_s']}, cold pass {out['ratio_cold_s']}, "
          f"rows sent {out['ratio_rows_sent']}")


if __name__ == "__main__":
    main()
