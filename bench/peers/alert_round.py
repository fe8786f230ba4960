"""One alert round's cost at one agent's series count (issue 17).

    python bench/peers/alert_round.py [--series 116] [--rounds 200] [--profile]

A real Store with one node's series (the watched host metrics, two per-core series and the rest
as `system_misc_*` with labels), the default rules, and `AlertEngine.evaluate_once` called
`--rounds` times: milliseconds per round, with cProfile's top entries on `--profile`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository

from legion.aggregator.alerts.engine import AlertEngine  # noqa: E402
from legion.aggregator.store import IncomingBatch, Store  # noqa: E402
from legion.cli.config import config_from_dict  # noqa: E402
from legion.proto import MetricsBatch, Sample, canonical_labels  # noqa: E402

HOST = ("system_cpu_usage_percent", "system_memory_usage_percent",
        "system_disk_usage_percent", "system_load1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=116)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="legion-alert-round-"))
    try:
        cfg = config_from_dict({"collection_interval": 1.0}, base_dir=work)
        store = Store(work / "x.duckdb", cfg.storage)
        now = int(time.time() * 1000)
        misc = max(0, args.series - len(HOST) - 2)
        for seq in range(1, 31):
            t = now - (31 - seq) * 1000
            samples = [Sample(n, (), 10.0 + seq % 3, t) for n in HOST]
            samples += [Sample("system_cpu_core_usage_percent", canonical_labels({"cpu": str(i)}),
                               5.0, t) for i in range(2)]
            samples += [Sample(f"system_misc_{i}", canonical_labels({"dev": str(i % 5)}),
                               float(i), t) for i in range(misc)]
            store.write([IncomingBatch("n1", 1, seq, MetricsBatch.from_samples(samples), t)])
        engine = AlertEngine(cfg.aggregator_settings(), store)
        engine.load()
        engine.evaluate_once()
        prof = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        for _ in range(args.rounds):
            engine.evaluate_once()
        if prof:
            prof.disable()
        took = (time.perf_counter() - t0) / args.rounds
        print(f"{took * 1000:.2f} ms per round, {args.series} series, "
              f"{len(engine.rules())} rules{' (profiled)' if prof else ''}")
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(20)
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
