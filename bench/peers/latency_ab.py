"""End-to-end latency variants side by side under a bounded CPU load: `latency.py` (200 hosts, stage
clocks) once per variant per pair, order alternating, with `--load` busy Python processes beside
each run (each ends by itself after 60 s and is killed when its run ends). One summary line per
run: load average before/after, p50/p99 end to end, each stage's p50/p99, the busiest threads.

A variant is `name=` (as it is) or `name=ENV:VALUE;ENV:VALUE` with `latency_stages.py`'s knobs:
LEGION_BENCH_IO_THREADS, LEGION_BENCH_NO_BANDS, LEGION_BENCH_SWITCH_MS. Example::

    python bench/peers/latency_ab.py "base=,nobands=LEGION_BENCH_NO_BANDS:1" --pairs 3 --load 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOG = "import time\ne = time.monotonic() + 60\nwhile time.monotonic() < e: pass"
STAGES = ("received", "accepted", "hub", "ws_send", "client")


def one_run(name: str, knobs: str, hosts: int, secs: float, load: int) -> str:
    """One latency run of a variant beside `load` busy processes; its summary line."""
    env = dict(os.environ)
    for kv in filter(None, knobs.split(";")):
        k, _, v = kv.partition(":")
        env[k] = v
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(load)]
    before = os.getloadavg()[0]
    try:
        res = subprocess.run([sys.executable, str(HERE / "latency.py"), "--hosts", str(hosts),
                              "--secs", str(secs)], env=env, capture_output=True, text=True,
                             timeout=300)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    try:
        found = json.loads(res.stdout[res.stdout.index("{"):])
    except ValueError:
        return f"v={name} FAILED: {res.stderr[-500:]}"
    st, rd = found["stages"], found["rounds"][0]
    threads = list(st.get("thread_cpu_s", {}).items())[:6]
    return (f"v={name} load={before:.2f}->{os.getloadavg()[0]:.2f} p50={rd['p50_ms']:.1f} "
            f"p99={rd['p99_ms']:.1f} n={int(rd['n'])} | "
            + " ".join(f"{s}={st[s]['p50_ms']}/{st[s]['p99_ms']}" for s in STAGES if s in st)
            + " | cpu " + " ".join(f"{k}={v}" for k, v in threads))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", help="comma-separated name=ENV:VALUE;... (see the docstring)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--load", type=int, default=2, help="busy processes beside each run")
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--secs", type=float, default=15.0)
    ap.add_argument("--out", type=Path, help="also append the lines here")
    args = ap.parse_args()
    variants = [v.partition("=")[::2] for v in args.variants.split(",")]
    for r in range(args.pairs):
        for name, knobs in (variants if r % 2 == 0 else variants[::-1]):
            line = f"round={r} " + one_run(name, knobs, args.hosts, args.secs, args.load)
            print(line, flush=True)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
