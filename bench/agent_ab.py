"""Two node agent versions side by side, beside node_exporter, over the same windows.

Usage: `python bench/agent_ab.py --before REV [--rounds 3] [--window 60] [--warmup 10] [--json]`

`node_agent/` and `legion/kernel/spool/` of git revision REV are exported to a temporary
directory; one `legionctl aggregator run` + agent stack runs that code ("before": the agent
process points `legion.node_agent` and `legion.kernel.spool` at the exports before anything
imports them), another the working tree
("after"), and node_exporter runs scraped every second by Prometheus, all at once at 1 s and
measured over the same windows (`agent_overhead.Sampler`: schedstat CPU, RSS every second), so the
shared machine's load falls on all three alike. Per window: CPU % of one core, mean RSS, series
(stored for the node / lines in a scrape) and CPU-ms per 1,000 samples; the medians and the
ratios after/before and each agent/node_exporter are printed with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

from agent_overhead import NODE, Sampler, legionctl, prepare, series_of_node, stop_proc  # noqa: E402
from host_rows import exporter_series  # noqa: E402
from peers import start_node_exporter, start_prometheus  # noqa: E402

LAUNCH = (
    "import sys, legion.node_agent as m, legion.kernel.spool as k; "
    "m.__path__[:] = [sys.argv.pop(1)]; k.__path__[:] = [sys.argv.pop(1)]; "
    "from legion.cli.main import main; sys.argv[0] = 'legionctl'; main()"
)


def start_stack(d: Path, old: Path | None) -> tuple[Path, list[subprocess.Popen[bytes]]]:
    """An aggregator and an agent; the agent runs the export under `old` when given."""
    cfg = prepare(d, 1.0)
    agg = legionctl("aggregator", "run", "--config", str(cfg), log=d / "aggregator.log")
    assert isinstance(agg, subprocess.Popen)
    time.sleep(1.0)
    args = ["agent", "run", "--config", str(cfg), "--node", NODE]
    if old is None:
        agent = legionctl(*args, log=d / "agent.log")
        assert isinstance(agent, subprocess.Popen)
    else:
        log = (d / "agent.log").open("wb")
        agent = subprocess.Popen([sys.executable, "-c", LAUNCH, str(old / "node_agent"),
                                  str(old / "legion/kernel/spool"), *args],
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return cfg, [agg, agent]


def export(rev: str, dest: Path, path: str = "node_agent") -> Path:
    """`path` (a folder of the repository) of `rev` under `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                          text=True, check=True, cwd=HERE).stdout.strip()
    archive = subprocess.run(["git", "archive", rev, path], capture_output=True,
                             check=True, cwd=root).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / path


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision of the 'before' agent")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="legion-ab-"))
    procs: list[subprocess.Popen[bytes]] = []
    peers = []
    try:
        old = work / "old"
        for path in ("node_agent", "legion/kernel/spool"):
            export(args.before, old, path)
        cfg_b, p = start_stack(work / "before", old)
        procs += p
        cfg_a, p = start_stack(work / "after", None)
        procs += p
        ne, ne_url = start_node_exporter(work)
        peers.append(ne)
        prom, _ = start_prometheus(work, ne_url.split("//", 1)[1], 1.0)
        peers.append(prom)
        time.sleep(args.warmup)
        for name, proc in (("before", procs[1]), ("after", procs[3])):
            if proc.poll() is not None:
                raise SystemExit(f"{name} agent exited: "
                                 f"{(work / name / 'agent.log').read_text()[-2000:]}")
        pids = {"before": procs[1].pid, "after": procs[3].pid, "node_exporter": ne.pid}
        rounds = []
        for _ in range(args.rounds):
            samplers = {k: Sampler(pid) for k, pid in pids.items()}
            for s in samplers.values():
                s.begin()
            end = time.monotonic() + args.window
            while time.monotonic() < end:
                for s in samplers.values():
                    s.sample()
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            r: dict[str, float] = {"load1": os.getloadavg()[0]}
            for k, s in samplers.items():
                s.end()
                res = s.result()
                r[f"{k}_cpu_percent"], r[f"{k}_rss_mib"] = res["cpu_percent"], res["rss_mib_mean"]
            r["before_series"] = float(series_of_node(cfg_b)["total"])
            r["after_series"] = float(series_of_node(cfg_a)["total"])
            r["node_exporter_series"] = float(exporter_series(ne_url))
            for k in pids:  # CPU ms per 1,000 samples at one tick per second
                r[f"{k}_cpu_ms_per_1k"] = r[f"{k}_cpu_percent"] * 10 / r[f"{k}_series"] * 1000
            r["after_over_before"] = r["after_cpu_ms_per_1k"] / r["before_cpu_ms_per_1k"]
            r["after_over_node_exporter"] = (r["after_cpu_ms_per_1k"]
                                             / r["node_exporter_cpu_ms_per_1k"])
            r["before_over_node_exporter"] = (r["before_cpu_ms_per_1k"]
                                              / r["node_exporter_cpu_ms_per_1k"])
            rounds.append(r)
            print(json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
    finally:
        for proc in reversed(procs):
            stop_proc(proc)
        for peer in peers:
            peer.stop()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    if args.json:
        print(json.dumps({"rounds": rounds, "median": med}, indent=1))
        return 0
    print(f"medians of {len(rounds)} x {args.window:.0f} s, load1 {med['load1']:.2f} "
          f"({os.cpu_count()} CPUs, shared machine), before = {args.before}")
    for k in pids:
        print(f"  {k:14} {med[f'{k}_cpu_percent']:.3f} % CPU  {med[f'{k}_rss_mib']:.1f} MiB  "
              f"{med[f'{k}_series']:.0f} series  {med[f'{k}_cpu_ms_per_1k']:.2f} CPU-ms/1k samples")
    print(f"  CPU per sample: after/before {med['after_over_before']:.2f}x, after/node_exporter "
          f"{med['after_over_node_exporter']:.2f}x, before/node_exporter "
          f"{med['before_over_node_exporter']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
