"""Legion against the tools users would pick instead, side by side in one run, on the same data.

    python bench/peers/run.py [--quick] [--rounds 3] [--out bench/RESULTS.md]

Peers (Debian packages, started here on 127.0.0.1 with temp data; nothing is installed: missing
ones are named with the apt-get/pip command and the run exits 2): VictoriaMetrics (storage,
ingest, queries), Prometheus + node_exporter (receiving side, agent), collectd (agent).
Rows: bytes on disk per point; ingest points/s (wall and per server CPU-second) with every point
accounted for; one-series and fleet-average query latency; the agent's CPU/RSS/series beside
node_exporter's and collectd's; the aggregator at one agent beside Prometheus scraping
node_exporter; end-to-end latency sample -> WebSocket at 1 and 200 hosts.
Each timed row is measured `--rounds` times (order of the two sides alternating per round) and
the median reported; ratios are taken inside one run only. The machine may be shared: absolute
numbers are noisy, ratios less so. `--quick` is a smaller version of every row (< 3 minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

import peers  # noqa: E402

SIZES = {  # quick, full
    "hosts": (10, 100), "minutes": (15, 60), "ingest_frames": (120, 2000),
    "query_reps": (9, 21), "host_window_s": (5.0, 60.0), "latency_s": (4.0, 30.0),
}


ROWS = ("storage", "ingest", "host", "latency")
FAST_COMMIT_MS = 25
"""The latency row's second setting of `aggregator.commit_interval_ms` (the default is 100)."""


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over rounds."""
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def run_storage_and_queries(work: Path, size: dict[str, Any], rounds: int) -> dict[str, Any]:
    import data_rows as d
    import ingest as ingest_bench

    from legion.aggregator.store import Store
    from legion.cli.client import ApiClient
    from legion.cli.config import load_config
    from legion.cli.setup_cmds import add_agent_key
    from tests.conftest import make_setup

    work.mkdir(parents=True, exist_ok=True)
    hour = 3_600_000
    t0 = int(time.time() * 1000) // hour * hour - 3 * hour
    fleet, values = d.fleet_ticks(size["hosts"], size["minutes"], t0)
    n = values.size
    print(f"[storage] {size['hosts']} hosts x {fleet.n} series x {size['minutes']} min @ 1 s "
          f"= {n / 1e6:.2f} M points", flush=True)
    db = work / "legion.duckdb"
    legion = d.legion_load(db, fleet, values, t0)
    vm_peer, vm_url = peers.start_victoria_metrics(work)
    try:
        lines = d.vm_lines(fleet, values, t0)
        for i in range(0, len(lines), 200):
            d.vm_post(vm_url, b"\n".join(lines[i:i + 200]))
        vm_bytes = d.vm_flush_and_size(vm_url, work / "vm-data")
        stored = d.vm_count(vm_url, '{host=~"host-.*"}',
                            t0 / 1000 + size["minutes"] * 60, f"{size['minutes'] + 1}m")
        out: dict[str, Any] = {**legion, "vm_du_bpp": vm_bytes / n, "vm_points": stored,
                               "points": n}
        end = t0 + size["minutes"] * 60_000
        lo = max(t0, end - hour)

        def orders(r: int) -> list[str]:
            return ["legion", "vm"] if r % 2 == 0 else ["vm", "legion"]

        store = Store(db)
        try:
            res = [d.query_round(lambda q: lambda: store.query(since_ms=lo, until_ms=end, **q),
                                 "inproc", vm_url, lo, end, orders(r), size["query_reps"])
                   for r in range(rounds)]
        finally:
            store.close()
        # over HTTP: the real `legionctl aggregator run` serving this file, in its own process
        cfg_path = make_setup(work / "agg", storage={"db_path": str(db)},
                              security={"enable_tls": False})
        cfg = load_config(cfg_path)
        add_agent_key(cfg, "bench")  # an aggregator refuses to start with no agent keys
        api = ApiClient(cfg, (cfg_path.parent / "admin.token").read_text().strip())
        agg = ingest_bench.start_aggregator(cfg_path, work / "agg.log")
        try:
            ingest_bench.wait_api(api)
            # past its start-up work (hub, analytics, alerting): polled, not a fixed 3 s sleep
            print(f"  (aggregator quiet {peers.wait_quiet(agg.pid):.1f} s after answering)",
                  flush=True)
            auth = {"Authorization": f"Bearer {api.token}"}

            def url(q: dict[str, Any]) -> str:
                return f"{api.base}/api/v1/query?" + urllib.parse.urlencode(
                    d.http_params(q, lo, end), doseq=True)

            def fresh(q: dict[str, Any]) -> Any:  # a new connection per request, as urllib
                u = url(q)
                return lambda: peers.http_get(u, headers=auth)

            res2 = [d.query_round(fresh, "http", vm_url, lo, end, orders(r),
                                  size["query_reps"], rows_of=json.loads)
                    for r in range(rounds)]
            out["fleet_rows_http"] = len(api.get("/api/v1/query",
                                                 **d.http_params(d.QUERY_FLEET, lo, end)))
            # keep-alive: one persistent connection to each server (a poller's, a browser's)
            legion_ka = peers.KeepAlive(api.base, auth)
            vm_ka = peers.KeepAlive(vm_url)

            def kept(q: dict[str, Any]) -> Any:
                u = url(q)
                return lambda: legion_ka.get_url(u)

            res3 = [d.query_round(kept, "http_ka", vm_url, lo, end, orders(r),
                                  size["query_reps"], vm_get=vm_ka.get_url, rows_of=json.loads)
                    for r in range(rounds)]
        finally:
            agg.terminate()
            agg.wait(30)
        res = [{**a, **b, **c} for a, b, c in zip(res, res2, res3, strict=True)]
        out["queries"] = res
        out.update(median_of(res))
    finally:
        vm_peer.stop()
    return out


def run_ingest(work: Path, size: dict[str, Any], rounds: int) -> dict[str, Any]:
    import data_rows as d
    import ingest as ingest_bench

    per_sender = size["ingest_frames"]
    frames = {f"s{i}": ingest_bench.make_frames(f"s{i}", 1000, per_sender) for i in range(2)}
    bodies = {k: d.vm_bodies(v) for k, v in frames.items()}
    print(f"[ingest] {2 * per_sender * 1000 / 1e6:.1f} M points in 1000-point batches, "
          "2 senders", flush=True)
    res = []
    for r in range(rounds):
        one: dict[str, float] = {}
        for side in (["legion", "vm"] if r % 2 == 0 else ["vm", "legion"]):
            w = work / f"ingest-{r}-{side}"
            w.mkdir(parents=True)
            one.update(d.ingest_legion(w, frames, 1000) if side == "legion"
                       else d.ingest_vm(w, bodies, 1000))
            shutil.rmtree(w, ignore_errors=True)
        print(f"  round {r + 1}: {json.dumps({k: round(v) for k, v in one.items()})}",
              flush=True)
        res.append(one)
    return {"rounds": res, **median_of(res)}


def run_host(work: Path, size: dict[str, Any], rounds: int) -> dict[str, Any]:
    from host_rows import HostRows

    print(f"[agent + receiving side] {rounds} windows of {size['host_window_s']:.0f} s, all "
          "five processes at once", flush=True)
    rows = HostRows(work / "host", warmup_s=0.0)
    try:
        # past their start-up work (the aggregator's took 4.5 s at load 13): polled, not 5 s
        print(f"  (quiet {peers.wait_quiet(*rows.pids.values()):.1f} s after starting)",
              flush=True)
        res = [rows.round(size["host_window_s"]) for _ in range(rounds)]
    finally:
        rows.close()
    return {"rounds": res, **median_of(res)}


def run_latency(work: Path, size: dict[str, Any], rounds: int) -> dict[str, Any]:
    import latency

    out: dict[str, Any] = {}
    for hosts in (1, 200):
        print(f"[latency] {hosts} host(s), {rounds} x {size['latency_s']:.0f} s", flush=True)
        res = latency.measure(work / f"lat{hosts}", hosts, size["latency_s"], rounds)
        out[hosts] = {"rounds": res, **median_of(res)}
    if not size["quick"]:  # commits are pushed to the hub: the commit interval is the floor
        print(f"[latency] 200 hosts, aggregator.commit_interval_ms = {FAST_COMMIT_MS}",
              flush=True)
        res = latency.measure(work / "lat200-fast", 200, size["latency_s"], rounds,
                              commit_interval_ms=FAST_COMMIT_MS)
        out["200@commit"] = {"rounds": res, **median_of(res)}
    return out


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def table(r: dict[str, Any]) -> list[str]:
    """The Markdown rows: figure | Legion | peer | ratio (Legion / peer)."""
    s, i, h, lat = r["storage"], r["ingest"], r["host"], r["latency"]
    f = "{:.2f}".format
    return [
        "| figure | Legion | peer | ratio (Legion / peer) |", "|---|---|---|---|",
        f"| storage on disk, {s['points'] / 1e6:.2f} M points (B/point) | chunk payload "
        f"{f(s['legion_chunk_payload_bpp'])}; used blocks {f(s['legion_used_blocks_bpp'])}; "
        f"**file {f(s['legion_file_bpp'])}** | VictoriaMetrics `du` {f(s['vm_du_bpp'])} | file "
        f"{ratio(s['legion_file_bpp'], s['vm_du_bpp'])} |",
        f"| ingest, 1000-point batches, 2 senders (pts/s) | {i['legion_ingest_pts_per_s']:,.0f} "
        f"wall, {i['legion_ingest_pts_per_cpu_s']:,.0f} per server CPU-s, lost "
        f"{i['legion_ingest_lost']:.0f} | VictoriaMetrics JSON import "
        f"{i['vm_ingest_pts_per_s']:,.0f} wall, {i['vm_ingest_pts_per_cpu_s']:,.0f} per CPU-s, "
        f"lost {i['vm_ingest_lost']:.0f} | wall "
        f"{ratio(i['legion_ingest_pts_per_s'], i['vm_ingest_pts_per_s'])}, per CPU "
        f"{ratio(i['legion_ingest_pts_per_cpu_s'], i['vm_ingest_pts_per_cpu_s'])} |",
        f"| one series, {min(60, r['size']['minutes'])} min @ 1 m avg (ms) | "
        f"{f(s['legion_one_inproc_ms'])} in-process, {f(s['legion_one_http_ms'])} HTTP | "
        f"VictoriaMetrics query_range {f(s['vm_one_http_ms'])} | in-process "
        f"{ratio(s['legion_one_inproc_ms'], s['vm_one_inproc_ms'])}, HTTP "
        f"{ratio(s['legion_one_http_ms'], s['vm_one_http_ms'])}; keep-alive "
        f"{f(s['legion_one_http_ka_ms'])} against {f(s['vm_one_http_ka_ms'])}, "
        f"{ratio(s['legion_one_http_ka_ms'], s['vm_one_http_ka_ms'])} |",
        f"| fleet average, {min(60, r['size']['minutes'])} min @ 5 m (ms) | "
        f"{f(s['legion_fleet_inproc_ms'])} in-process, {f(s['legion_fleet_http_ms'])} HTTP "
        f"(`group_by=*`, {s['fleet_rows_http']} rows; without it, every series to the client "
        f"and averaged there: {f(s['legion_fleet_nogroup_http_ms'])}) | "
        f"{f(s['vm_fleet_http_ms'])} | "
        f"in-process {ratio(s['legion_fleet_inproc_ms'], s['vm_fleet_inproc_ms'])}, HTTP "
        f"{ratio(s['legion_fleet_http_ms'], s['vm_fleet_http_ms'])}; keep-alive "
        f"{f(s['legion_fleet_http_ka_ms'])} against {f(s['vm_fleet_http_ka_ms'])}, "
        f"{ratio(s['legion_fleet_http_ka_ms'], s['vm_fleet_http_ka_ms'])} |",
        f"| node agent @ 1 s | {f(h['agent_cpu_percent'])} % CPU, {h['agent_rss_mib']:.1f} MiB, "
        f"{h['agent_series']:.0f} series, {f(h['agent_cpu_ms_per_1k_samples'])} CPU-ms per 1k "
        f"samples | node_exporter (scraped 1/s) {f(h['node_exporter_cpu_percent'])} %, "
        f"{h['node_exporter_rss_mib']:.1f} MiB, {h['node_exporter_series']:.0f} series, "
        f"{f(h['node_exporter_cpu_ms_per_1k_samples'])}; collectd "
        f"{f(h['collectd_cpu_percent'])} %, {h['collectd_rss_mib']:.1f} MiB, "
        f"{h['collectd_values']:.0f} values, {f(h['collectd_cpu_ms_per_1k_samples'])} | CPU "
        f"{ratio(h['agent_cpu_percent'], h['node_exporter_cpu_percent'])} / "
        f"{ratio(h['agent_cpu_percent'], h['collectd_cpu_percent'])}; CPU per sample "
        f"{ratio(h['agent_cpu_ms_per_1k_samples'], h['node_exporter_cpu_ms_per_1k_samples'])}"
        f" / {ratio(h['agent_cpu_ms_per_1k_samples'], h['collectd_cpu_ms_per_1k_samples'])}; "
        f"RSS {ratio(h['agent_rss_mib'], h['node_exporter_rss_mib'])} |",
        f"| receiving side at one agent | aggregator {f(h['aggregator_cpu_percent'])} % CPU, "
        f"{h['aggregator_rss_mib']:.0f} MiB at {h['agent_series']:.0f} pts/s "
        f"({f(h['aggregator_cpu_percent_per_1k_pts_s'])} % per 1,000 pts/s) | Prometheus "
        f"scraping {h['node_exporter_series']:.0f} samples/s: "
        f"{f(h['prometheus_cpu_percent'])} %, {h['prometheus_rss_mib']:.0f} MiB | CPU "
        f"{ratio(h['aggregator_cpu_percent'], h['prometheus_cpu_percent'])}, RSS "
        f"{ratio(h['aggregator_rss_mib'], h['prometheus_rss_mib'])} |",
        "| end to end, sample ts -> WebSocket update (ms; batches published to the hub when "
        "ingest accepts them, "
        f"`commit_interval_ms` 100) | 1 host p50 "
        f"{lat[1]['p50_ms']:.0f} / p99 {lat[1]['p99_ms']:.0f}; 200 hosts p50 "
        f"{lat[200]['p50_ms']:.0f} / p99 {lat[200]['p99_ms']:.0f} | (target p99 <= 50 at 200) "
        f"| p99 / target {lat[200]['p99_ms'] / 50:.1f}x |",
    ] + ([f"| same, 200 hosts, `commit_interval_ms: {FAST_COMMIT_MS}` | p50 "
          f"{lat['200@commit']['p50_ms']:.0f} / p99 {lat['200@commit']['p99_ms']:.0f} | | p99 / "
          f"target {lat['200@commit']['p99_ms'] / 50:.1f}x |"] if "200@commit" in lat else [])


def write_results(path: Path, r: dict[str, Any], args: argparse.Namespace, took: float) -> None:
    lines = [
        "# Legion against its peers (bench/peers/run.py)", "",
        f"Written by `python bench/peers/run.py{' --quick' if args.quick else ''} --rounds "
        f"{args.rounds}` on {r['date']} in {took / 60:.1f} min.", "",
        f"Machine: {r['machine']}. The machine may be shared with other jobs (the load "
        "average above says how busy it was): absolute figures are noisy; each timed figure "
        f"is the median of {args.rounds} rounds, the two sides alternating order per round, "
        "and ratios are taken within this one run. The agent/receiving-side rows measure all "
        "five processes at once over the same windows.", "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".", "",
        "Machine state (`peers.wake_cost`), at the start and at the end of the run: "
        + "; ".join(marker(r[k]) for k in ("wake_cost", "wake_cost_end") if k in r)
        + ". Compare this line before comparing the CPU rows of two tables.",
        "",
        *table(r), "",
        "Sizes: " + ", ".join(f"{k}={v}" for k, v in r["size"].items()) + ".", "",
        "Every figure per round, as JSON:", "", "```json",
        json.dumps({k: v for k, v in r.items() if k in ("storage", "ingest", "host", "latency")},
                   indent=1, default=lambda x: round(x, 3) if isinstance(x, float) else str(x)),
        "```", ""]
    path.write_text("\n".join(lines))


def marker(w: dict[str, float]) -> str:
    """One `peers.wake_cost` reading in words."""
    return (f"a fixed Python step costs {w['hot_us']:.0f} us of CPU back to back and "
            f"{w['cold_us']:.0f} us after 1 s asleep, reading a 4 KiB page {w['page_hot_ns']:.0f}"
            f" and {w['page_cold_ns']:.0f} ns")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller version of every row")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per timed row (median)")
    ap.add_argument("--out", type=Path, default=HERE.parent / "RESULTS.md")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--only", choices=ROWS, help="run one row, print its figures as JSON and "
                    "leave --out alone (before/after checks)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    peers.check_prerequisites()
    size: dict[str, Any] = {k: v[0 if args.quick else 1] for k, v in SIZES.items()}
    size["quick"] = args.quick
    work = Path(tempfile.mkdtemp(prefix="legion-peers-"))
    started = time.monotonic()
    r: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                         "machine": peers.machine(), "versions": peers.versions(), "size": size,
                         "wake_cost": peers.wake_cost()}
    try:
        for name, fn, where in (("storage", run_storage_and_queries, work / "storage"),
                                ("ingest", run_ingest, work / "ingest"),
                                ("host", run_host, work), ("latency", run_latency, work)):
            if args.only not in (None, name):
                continue
            t = time.monotonic()
            r[name] = fn(where, size, args.rounds)
            r.setdefault("seconds", {})[name] = round(time.monotonic() - t, 1)
            print(f"  ({name}: {r['seconds'][name]:.0f} s)", flush=True)
        r["wake_cost_end"] = peers.wake_cost()  # the host's state moves within minutes
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - started
    if args.only is not None:
        print(json.dumps({"seconds": round(took), args.only: r[args.only],
                          "wake_cost": [r["wake_cost"], r["wake_cost_end"]]}, indent=1,
                         default=str))
        return 0
    write_results(args.out, r, args, took)
    print("\n".join(table(r)))
    print(f"\nwritten to {args.out} ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    mp.set_start_method("fork")
    sys.exit(main())
