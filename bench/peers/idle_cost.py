"""The receiving side's cost per 1,000 points/s: CPU % of one core and RSS of a real
`legionctl aggregator run` (config from `legionctl init`, as the peers host row) at 0 points/s
and at 1, 10 and 50 simulated hosts of 116 series each (one real agent's count at 1 s).

    python bench/peers/idle_cost.py [--window 30] [--levels 0x0,1x116,10x116,50x116]

A level `HxS` is H simulated agents (one Curve key and PUB socket each, as the agent) sending
one batch of S series a second, stamped at send time. Each level runs on a fresh aggregator,
measured over `--window` seconds after a warm-up (CPU from schedstat, RSS sampled every
second), with the machine's load average printed beside it. Two figures per level: the whole
cost per 1,000 points/s (CPU % at L / (L / 1000), RSS likewise) and the marginal one, the slope
above the idle floor: (CPU % at L - CPU % at 0 pts/s) / (L / 1000).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/
sys.path.insert(0, str(HERE.parents[1]))  # the repository

import ingest as ingest_bench  # noqa: E402
from agent_overhead import Sampler, legionctl, prepare  # noqa: E402
from latency import connect_hosts  # noqa: E402


def _agents(cfg_path: str, nodes: list[str], series: int, secs: float, go: Any,
            ready: Any) -> None:
    """One batch of `series` points per node per second, stamped now."""
    from legion.proto import Sample, canonical_labels, encode_samples

    socks = connect_hosts(cfg_path, nodes)
    labels = [canonical_labels({"cpu": str(i)}) for i in range(series)]
    ready.put(len(socks))
    go.wait()
    end, seq, next_tick = time.monotonic() + secs, 0, time.monotonic()
    while time.monotonic() < end:
        seq += 1
        for n, s in socks.items():
            now = int(time.time() * 1000)
            s.send(encode_samples(n, 1, seq, now, [
                Sample("system_cpu_core_usage_percent", lb, float((seq + i) % 97), now)
                for i, lb in enumerate(labels)]))
        next_tick += 1.0
        time.sleep(max(0.0, next_tick - time.monotonic()))
    for s in socks.values():
        s.close(linger=1000)
    zmq.Context.instance().term()


def measure(work: Path, hosts: int, series: int, warm_s: float, window_s: float
            ) -> dict[str, float]:
    """CPU % and mean RSS (MiB) of the aggregator at `hosts` x `series` points/s."""
    from legion.cli.client import ApiClient, resolve_token
    from legion.cli.config import load_config
    from legion.cli.setup_cmds import add_agent_key

    cfg_path = prepare(work, 1.0)
    cfg = load_config(cfg_path)
    nodes = [f"sim{i:03d}" for i in range(hosts)]
    for n in nodes:
        add_agent_key(cfg, n)
    agg = legionctl("aggregator", "run", "--config", str(cfg_path), log=work / "agg.log")
    assert not isinstance(agg, str)
    procs: list[Any] = []
    try:
        ingest_bench.wait_api(ApiClient(load_config(cfg_path),
                                        resolve_token(load_config(cfg_path), None)))
        go, ready = mp.Event(), mp.Queue()
        if hosts:
            parts = [nodes[i::2] for i in range(min(2, hosts))]
            procs = [mp.Process(target=_agents, args=(str(cfg_path), p, series,
                                                      warm_s + window_s + 30, go, ready))
                     for p in parts]
            for p in procs:
                p.start()
            for _ in procs:
                ready.get(timeout=120)
        go.set()
        time.sleep(warm_s)
        s = Sampler(agg.pid)
        s.begin()
        load0 = os.getloadavg()[0]
        end = time.monotonic() + window_s
        while time.monotonic() < end:
            s.sample()
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        s.end()
        r = s.result()
        return {"pts_per_s": float(hosts * series), "cpu_percent": r["cpu_percent"],
                "rss_mib": r["rss_mib_mean"],
                "load_avg": round((load0 + os.getloadavg()[0]) / 2, 1)}
    finally:
        for p in procs:
            p.join(warm_s + window_s + 60)
            if p.is_alive():
                p.terminate()
        agg.terminate()
        agg.wait(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=30.0, help="measured seconds per level")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring")
    ap.add_argument("--levels", default="0x0,1x116,10x116,50x116",
                    help="comma-separated HOSTSxSERIES")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="legion-idle-cost-"))
    out = []
    try:
        for i, level in enumerate(args.levels.split(",")):
            h, s = (int(x) for x in level.split("x"))
            r = measure(work / f"l{i}", h, s, args.warmup, args.window)
            print(json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
            out.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = next((r for r in out if r["pts_per_s"] == 0), None)
    if base is not None:
        for r in out:
            if r["pts_per_s"]:
                k = r["pts_per_s"] / 1000
                slope = (r["cpu_percent"] - base["cpu_percent"]) / k
                print(f"{r['pts_per_s']:>7.0f} pts/s: {r['cpu_percent']:.2f} % CPU, "
                      f"{r['rss_mib']:.0f} MiB; per 1,000 pts/s {r['cpu_percent'] / k:.2f} % "
                      f"CPU and {r['rss_mib'] / k:.0f} MiB, {slope:.2f} % CPU and "
                      f"{(r['rss_mib'] - base['rss_mib']) / k:.1f} MiB above idle "
                      f"(load {r['load_avg']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
