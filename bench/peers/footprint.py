"""Memory each host-row process touches per second, and what one touched page costs this host.

    python bench/peers/footprint.py [--windows 10] [--window 2] [--warmup 20] [--json]

Starts the five processes of the peers host row (`host_rows.HostRows`: the Legion agent and
aggregator, node_exporter, Prometheus scraping it every second, collectd), then, per window,
clears the accessed bits of every page of each process (`/proc/PID/clear_refs`) and after
`--window` seconds sums the pages the process touched again (`Referenced:` of
`/proc/PID/smaps`), by mapping. Printed per process: pages touched per second (median of the
windows), the mappings that hold most of them, the CPU it used in the same windows, and CPU per
touched page.

Why: on the host of sessions 11-12 a page first touched after about a second costs several
microseconds (the `wake_cost` marker's page probe), so the CPU rows of processes that wake once a
second follow the memory they touch per wake more than the work they do. Clearing the accessed
bits makes every page "first touched" again, so CPU in these windows is higher than in the host
row: compare it only within this script's output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # bench/

import psutil  # noqa: E402
from agent_overhead import cpu_seconds, series_of_node  # noqa: E402
from host_rows import HostRows, exporter_series  # noqa: E402

PAGE_KIB = 4


def referenced_kib(pid: int) -> dict[str, int]:
    """KiB referenced since the last clear_refs, per mapping name (`[anon]` for unnamed)."""
    out: dict[str, int] = {}
    name = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=6)
            if "-" in head[0] and not head[0].endswith(":"):
                name = os.path.basename(head[5].strip()) if len(head) > 5 else "[anon]"
            elif head[0] == "Referenced:":
                out[name] = out.get(name, 0) + int(head[1])
    return out


def measure(pids: dict[str, int], windows: int, window_s: float) -> dict[str, dict]:
    """Per process: touched pages per second per window, CPU % per window, KiB per mapping."""
    res: dict[str, dict] = {k: {"pages_per_s": [], "cpu_percent": [], "maps_kib": {}}
                            for k in pids}
    for _ in range(windows):
        procs = {k: psutil.Process(p) for k, p in pids.items()}
        before = {k: cpu_seconds(proc) for k, proc in procs.items()}
        for p in pids.values():
            Path(f"/proc/{p}/clear_refs").write_text("1")
        time.sleep(window_s)
        for k, p in pids.items():
            maps = referenced_kib(p)
            res[k]["pages_per_s"].append(sum(maps.values()) / PAGE_KIB / window_s)
            res[k]["cpu_percent"].append((cpu_seconds(procs[k]) - before[k]) / window_s * 100)
            for name, kib in maps.items():
                res[k]["maps_kib"][name] = res[k]["maps_kib"].get(name, 0) + kib / windows
    return res


def main(argv: list[str] | None = None) -> int:
    """Run and print; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--window", type=float, default=2.0, help="seconds per window")
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = HostRows(Path(tempfile.mkdtemp(prefix="legion-footprint-")), args.warmup)
    try:
        res = measure(rows.pids, args.windows, args.window)
        series = {"agent": float(series_of_node(rows.cfg)["total"]),
                  "node_exporter": float(exporter_series(rows.ne_url))}
    finally:
        rows.close()
    summary = {}
    for k, r in res.items():
        pages = statistics.median(r["pages_per_s"])
        cpu = statistics.median(r["cpu_percent"])
        top = sorted(r["maps_kib"].items(), key=lambda kv: -kv[1])[:6]
        summary[k] = {"pages_per_s": pages, "cpu_percent": cpu,
                      "cpu_us_per_page": cpu * 1e4 / pages if pages else None,
                      "top_mib_per_window": {n: kib / 1024 for n, kib in top}}
    for k, n in series.items():
        summary[k]["series"] = n
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.windows} windows of {args.window:g} s; accessed bits cleared at each start")
    for k, s in summary.items():
        per_page = s["cpu_us_per_page"]
        print(f"{k:14s} {s['pages_per_s']:7.0f} pages/s ({s['pages_per_s'] * PAGE_KIB / 1024:5.2f}"
              f" MiB/s)  CPU {s['cpu_percent']:.3f} %  "
              f"{'-' if per_page is None else f'{per_page:.1f}'} us CPU per page")
        print("      " + ", ".join(f"{n} {mib:.2f}" for n, mib in s["top_mib_per_window"].items()))
    for ours, peer in (("aggregator", "prometheus"), ("agent", "node_exporter")):
        print(f"{ours} / {peer}: pages touched per second "
              f"{summary[ours]['pages_per_s'] / summary[peer]['pages_per_s']:.2f}x")
    per_sample = {k: summary[k]["pages_per_s"] / series[k] for k in series}
    print(f"agent / node_exporter per sample ({series['agent']:.0f} and "
          f"{series['node_exporter']:.0f} series): {per_sample['agent']:.1f} against "
          f"{per_sample['node_exporter']:.1f} pages, "
          f"{per_sample['agent'] / per_sample['node_exporter']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
