"""The maintenance round's catch-up fold slice at fleet size: before (minutes of rows) and after.

    python bench/batch_fold_slice.py [--before main] [--hosts 200] [--minutes 75] [--steps 5]

A real store file (temporary) gets `--minutes` of `batches` rows, one batch a second per host
(received times spread over each second, one commit a second, a checkpoint every 10 min), then
a first fold so every (node, epoch) already has its run, as in service. Catch-up steps then
alternate on the same file, each folding the next slice: "before" is
`aggregator/store/batch_fold.py` of git revision `--before` folding its catch-up slice
(`CATCH_UP_MS` of rows), "after" the working tree's (the same span, at most `CATCH_UP_ROWS`
rows), and the working tree's step with no row bound (what the cheaper step alone gives).
Prints each step's wall time and rows, the medians and their ratio, and the load average (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from types import ModuleType

from legion.aggregator.config import StorageConfig
from legion.aggregator.store import Store, batch_fold

MIN = 60_000


def build(path: Path, hosts: int, minutes: int, now_ms: int) -> Store:
    """A store whose `batches` hold `minutes` of rows of `hosts` hosts ending at `now_ms`."""
    s = Store(path, StorageConfig(raw_retention_hours=0), clock_ms=lambda: now_ms)
    t0 = now_ms - minutes * MIN
    with s._cursor() as cur:
        for sec in range(minutes * 60):  # one commit a second, as ingest writes them
            cur.execute(f"""INSERT INTO batches SELECT 'host-' || i, 1, {sec + 1}, 116,
                            {t0 + sec * 1000} + i FROM range({hosts}) t(i)""")
            if sec % 600 == 599:
                cur.execute("CHECKPOINT")
    return s


def module_of(rev: str, dest: Path) -> ModuleType:
    """`aggregator/store/batch_fold.py` of git revision `rev`, imported on its own."""
    src = subprocess.run(["git", "show", f"{rev}:aggregator/store/batch_fold.py"], check=True,
                         capture_output=True, cwd=Path(__file__).parent).stdout
    path = dest / f"batch_fold_{rev.replace('/', '_')}.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    """Build, fold once, then alternate old and new catch-up steps."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="main", help="git revision of the 'before' fold")
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--minutes", type=int, default=75)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args(argv)
    now = 1_800_000_000_000
    with tempfile.TemporaryDirectory(prefix="legion-fold-") as d:
        old = module_of(args.before, Path(d))
        s = build(Path(d) / "f.duckdb", args.hosts, args.minutes, now)
        try:
            con = s._open()
            cut = batch_fold.horizon_ms(now)
            batch_fold.step(con, cut, MIN)  # every node gets its run
            kinds = ("before", "after", "after, no row bound")
            times: dict[str, list[float]] = {k: [] for k in kinds}
            rows: dict[str, list[int]] = {k: [] for k in kinds}
            for k in range(len(kinds) * args.steps):
                kind = kinds[k % len(kinds)]
                t = time.perf_counter()
                if kind == "before":
                    n = old.step(con, cut, old.CATCH_UP_MS)
                else:
                    n = batch_fold.step(con, cut, batch_fold.CATCH_UP_MS,
                                        batch_fold.CATCH_UP_ROWS if kind == "after" else None)
                dt = time.perf_counter() - t
                if n is None:
                    break
                times[kind].append(dt * 1000)
                rows[kind].append(n)
                print(f"  {kind:20} {n:7d} rows  {dt * 1000:7.1f} ms", flush=True)
        finally:
            s.close()
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"{args.hosts} hosts, load1 {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs, shared):")
    for k, v in med.items():
        print(f"  {k:20} median {v:.1f} ms for {statistics.median(rows[k]):.0f} rows")
    if len(med) == 3:
        print(f"  after/before: {med['after'] / med['before']:.2f}x (before = {args.before})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
