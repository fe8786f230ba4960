"""Remote-write sink throughput into a real Prometheus and VictoriaMetrics, against the DuckDB path.

    python bench/remote_write.py [--samples 400000] [--series 500]

Same batches (`--series` series, each once per batch as an agent's tick sends them, or
`--reps` points each; recent timestamps in time order), fresh
files per run, one process:

1. DuckDB only: `SinkSet(store)` with no remote sink, as ingest writes today: samples/s, CPU s;
2. DuckDB + remote-write sink into Prometheus, then into VictoriaMetrics (each started fresh on
   127.0.0.1): samples/s until the receiver has acknowledged everything; this process's added CPU
   per million samples (encoding, queue, snappy, HTTP; the receiver's own CPU is not counted);
3. backlog recovery: the whole set queued on disk first (as during an outage), then the senders
   start: the drain rate, and from it the recovery time of a one-hour backlog for a fleet
   producing R samples/s (3600·R / (drain − R), the live data still flowing), computed;
4. a real one-hour backlog: `--hour-series` series at a 1 s step over the last hour (720,000
   samples for 200 series), queued, then drained: measured.

Ratios, not absolute numbers, are the result: the machine is shared.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from legion.aggregator.sinks.config import RemoteWriteConfig  # noqa: E402
from legion.aggregator.sinks.remote_write import RemoteWriteSink  # noqa: E402
from legion.aggregator.sinks.table import SinkSet  # noqa: E402
from legion.aggregator.store import IncomingBatch, Store  # noqa: E402
from legion.proto import MetricsBatch  # noqa: E402
from tests.aggregator.remote_peers import Peer  # noqa: E402


def make_batches(total: int, series: int, reps: int = 1, step_ms: int = 10,
                 start_ms: int | None = None) -> list[IncomingBatch]:
    names = tuple(f"bench_metric_{i % 50}" for i in range(50))
    label_sets = tuple((("host", f"h{j}"),) for j in range(max(1, series // 50)))
    n_series = len(names) * len(label_sets)
    per = reps * n_series
    count = max(1, total // per)
    now = start_ms if start_ms is not None else int(time.time() * 1000) - 3_000_000
    rng = np.random.default_rng(0)
    sid = np.tile(np.arange(n_series), reps)
    out = []
    for seq in range(1, count + 1):
        ts = now + ((seq - 1) * reps + np.repeat(np.arange(reps), n_series)) * step_ms
        b = MetricsBatch(names, label_sets, (sid % 50).astype(np.uint32),
                         (sid // 50).astype(np.uint32), np.round(rng.uniform(0, 100, per), 2),
                         ts.astype(np.int64))
        out.append(IncomingBatch("bench-node", 1, seq, b, now))
    return out


def run(batches: list[IncomingBatch], tmp: Path, peer: Peer | None, *, backlog: bool = False
        ) -> dict[str, float]:
    tmp.mkdir(parents=True, exist_ok=True)
    store = Store(tmp / "db.duckdb")
    sink = None
    if peer is not None:
        sink = RemoteWriteSink(RemoteWriteConfig(name="bench", url=peer.write_url, shards=4,
                                                 max_samples_per_send=10_000,
                                                 min_backoff_secs=0.05, max_backoff_secs=0.5),
                               tmp / "queue")
    sinks = SinkSet(store, [sink] if sink else [])
    n = sum(len(b.batch) for b in batches)
    if not backlog:
        sinks.start()
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(batches), 10):
        sinks.write(batches[i:i + 10])
    sinks.checkpoint()
    t_write = time.perf_counter() - t0
    drain = 0.0
    if sink is not None:
        if backlog:
            t1 = time.perf_counter()
            sinks.start()
        while sink.stats()["samples_sent_total"] < n:
            time.sleep(0.02)
        if backlog:
            drain = time.perf_counter() - t1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sinks.stop()
    store.close()
    return {"samples": n, "wall": wall, "cpu": cpu, "write": t_write, "drain": drain}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=400_000)
    ap.add_argument("--series", type=int, default=500)
    ap.add_argument("--reps", type=int, default=1, help="points per series per batch")
    ap.add_argument("--hour-series", type=int, default=200,
                    help="series of the fleet whose real one-hour backlog (1 s step) is drained")
    ap.add_argument("--fleet-rate", type=float, default=2000.0,
                    help="R: samples/s the fleet produces, for the one-hour backlog figure")
    args = ap.parse_args()
    batches = make_batches(args.samples, args.series, args.reps)
    n = sum(len(b.batch) for b in batches)
    print(f"{n} samples in {len(batches)} batches, {args.series} series x {args.reps} points "
          "per batch (shared 2-core machine)")
    with tempfile.TemporaryDirectory() as d:
        for kind in ("prometheus", "victoria-metrics"):
            # the baseline right before each remote run: the shared machine drifts
            base = run(batches, Path(d) / f"duck-{kind}", None)
            print(f"duckdb only          : {n / base['wall']:10.0f} samples/s   "
                  f"cpu {base['cpu']:.2f} s")
            peer = Peer(kind, Path(d) / kind).start()
            try:
                r = run(batches, Path(d) / f"{kind}-live", peer)
            finally:
                peer.stop()
            added = (r["cpu"] - base["cpu"]) / n * 1e6
            print(f"duckdb + {kind:17s}: {n / r['wall']:10.0f} samples/s "
                  f"({r['wall'] / base['wall']:.2f}x the DuckDB-only time)   "
                  f"added cpu {added:.2f} s per million samples")
            # backlog: the senders start only once everything is queued on disk (as after an
            # outage), then drain into a fresh receiver
            peer2 = Peer(kind, Path(d) / f"{kind}-b").start()
            try:
                r2 = run(batches, Path(d) / f"{kind}-backlog", peer2, backlog=True)
            finally:
                peer2.stop()
            rate = n / r2["drain"]
            hour = 3600 * args.fleet_rate
            eta = hour / (rate - args.fleet_rate) if rate > args.fleet_rate else float("inf")
            print(f"  backlog drain into {kind}: {rate:10.0f} samples/s -> a one-hour backlog "
                  f"at R={args.fleet_rate:.0f}/s ({hour:.0f} samples) recovers in "
                  f"{eta / 60:.1f} min (computed)")
            hour_batches = make_batches(3600 * args.hour_series, args.hour_series, 1, 1000,
                                        int(time.time() * 1000) - 3_600_000)
            peer3 = Peer(kind, Path(d) / f"{kind}-hour").start()
            try:
                r3 = run(hour_batches, Path(d) / f"{kind}-hour-q", peer3, backlog=True)
            finally:
                peer3.stop()
            print(f"  a real one-hour backlog ({args.hour_series} series at 1 s, "
                  f"{r3['samples']} samples) into {kind}: drained in {r3['drain']:.1f} s "
                  f"({r3['samples'] / r3['drain']:.0f} samples/s)")


if __name__ == "__main__":
    main()
