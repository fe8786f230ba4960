"""Rows on the same data: storage on disk, query latency (one series, fleet average), ingest.

Legion and VictoriaMetrics get the same points: bench/storage.py's `Fleet` (hosts x 60 series at
1 s) for storage and queries; bench/ingest.py's 1000-point batches from 2 senders for ingest.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/
sys.path.insert(0, str(HERE.parents[1]))  # the repository (tests.conftest)

import ingest as ingest_bench  # noqa: E402
from agent_overhead import cpu_seconds  # noqa: E402
from peers import http_get, start_victoria_metrics  # noqa: E402
from storage import Fleet  # noqa: E402

HOUR = 3_600_000


def fleet_ticks(hosts: int, minutes: int, t0: int) -> tuple[Fleet, np.ndarray]:
    """The fleet and its values, (ticks, hosts, series), one tick per second from t0."""
    fleet = Fleet(hosts, 1.0, seed=3)
    return fleet, np.stack([fleet.tick() for _ in range(minutes * 60)])


def legion_load(path: Path, fleet: Fleet, values: np.ndarray, t0: int) -> dict[str, float]:
    """Write the ticks (a minute per commit), roll up, pack every settled hour, checkpoint;
    returns bytes per point of the chunk tables' payload, of the used blocks and of the file."""
    from legion.aggregator.config import StorageConfig
    from legion.aggregator.store import IncomingBatch, Store
    from legion.proto import MetricsBatch

    n_ticks, hosts, _ = values.shape
    clock = {"ms": t0 + n_ticks * 1000}
    store = Store(path, StorageConfig(rollup_interval_ms=10**9, maintenance_interval_secs=10**9),
                  clock_ms=lambda: clock["ms"])
    try:
        for i in range(0, n_ticks, 60):
            group = []
            for j in range(i, min(i + 60, n_ticks)):
                ts = t0 + j * 1000
                group += [IncomingBatch(f"host-{h:03d}", 1, j + 1, MetricsBatch(
                    fleet.names, fleet.label_sets, fleet.name_idx, fleet.label_idx,
                    values[j, h], np.full(fleet.n, ts, np.int64)), ts) for h in range(hosts)]
            store.write(group)
            store.roll_up(budget_s=10)
        store.roll_up(budget_s=60, include_open=True)
        clock["ms"] = t0 + n_ticks * 1000 + HOUR + 5 * 60_000  # every hour has settled
        for _ in range(20_000):
            if not store.stats()["rows"]["points"]:
                break
            store.maintain()
        store.checkpoint()
        st = store.stats()["rows"]
        used = store._con.execute(  # noqa: SLF001 - the bench reads the file's block counts
            "SELECT block_size * used_blocks FROM pragma_database_size() "
            "WHERE database_name = 'legion'").fetchall()[0][0]
    finally:
        store.close()
    n = values.size
    return {"legion_chunk_payload_bpp": st.get("chunk_bytes", 0) / n,
            "legion_used_blocks_bpp": used / n, "legion_file_bpp": path.stat().st_size / n,
            "points_left_unpacked": st["points"]}


def vm_lines(fleet: Fleet, values: np.ndarray, t0: int) -> list[bytes]:
    """The same points as VictoriaMetrics JSON import lines (one per series and host)."""
    n_ticks, hosts, n = values.shape
    ts = (t0 + np.arange(n_ticks, dtype=np.int64) * 1000).tolist()
    lines = []
    for h in range(hosts):
        for s in range(n):
            metric = {"__name__": fleet.names[fleet.name_idx[s]], "host": f"host-{h:03d}",
                      **dict(fleet.label_sets[fleet.label_idx[s]])}
            lines.append(json.dumps({"metric": metric, "values": values[:, h, s].tolist(),
                                     "timestamps": ts}).encode())
    return lines


def vm_post(url: str, body: bytes) -> None:
    """POST a JSON-lines import body."""
    req = urllib.request.Request(url + "/api/v1/import", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 - loopback only
        r.read()


def vm_flush_and_size(peer_url: str, data_dir: Path) -> int:
    """Flush VictoriaMetrics' buffers, wait for merges to settle, return `du` of its data."""
    http_get(peer_url + "/internal/force_flush")
    http_get(peer_url + "/internal/force_merge")
    last, stable = -1, 0
    for _ in range(120):  # background merges: wait until the size stops changing
        time.sleep(0.5)
        size = sum(f.stat().st_blocks * 512 for f in data_dir.rglob("*") if f.is_file())
        stable = stable + 1 if size == last else 0
        last = size
        if stable >= 4:
            break
    return last


def vm_count(url: str, match: str, at_s: float, window: str) -> int:
    """Points VictoriaMetrics holds for `match` in the window ending at `at_s`."""
    q = urllib.parse.urlencode({"query": f"sum(count_over_time({match}[{window}]))",
                                "time": f"{at_s:.3f}"})
    res = json.loads(http_get(f"{url}/api/v1/query?{q}"))["data"]["result"]
    return int(float(res[0]["value"][1])) if res else 0


def timed_ms(fn: Callable[[], Any], reps: int) -> float:
    """Median wall ms of `reps` calls (after one warm-up call)."""
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


QUERY_ONE = {"metric": "system_cpu_usage_percent", "node": "host-001", "labels": {"cpu": "total"},
             "step_ms": 60_000, "agg": "avg"}
QUERY_FLEET = {"metric": "system_cpu_usage_percent", "labels": {"cpu": "total"},
               "step_ms": 300_000, "agg": "avg", "group_by": "*"}


def http_params(q: dict[str, Any], lo: int, end: int) -> dict[str, Any]:
    """A QUERY_* as /api/v1/query parameters."""
    p = {k: v for k, v in q.items() if k not in ("labels", "step_ms") and v is not None}
    p.update(label=[f"{k}={v}" for k, v in q["labels"].items()], step=f"{q['step_ms']}ms",
             since=str(lo), until=str(end))
    return p


def client_average(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Mean per bucket of per-series rows (what a client without group_by does)."""
    acc: dict[int, list[float]] = {}
    for r in rows:
        acc.setdefault(r["ts_ms"], []).append(r["value"])
    return {t: sum(v) / len(v) for t, v in acc.items()}


def query_round(legion: Callable[[dict[str, Any]], Callable[[], Any]], prefix: str, vm_url: str,
                lo: int, end: int, order: list[str], reps: int,
                vm_get: Callable[[str], Any] = http_get,
                rows_of: Callable[[Any], list[dict[str, Any]]] = lambda r: r) -> dict[str, float]:
    """One series 1 h @ 1 m avg and the fleet average 1 h @ 5 m through Legion (in-process or
    HTTP) and VictoriaMetrics' query_range (`vm_get`: a new connection per request, or
    `peers.KeepAlive.get_url`), the two sides in the given order.

    `legion(q)` returns the call to time, made before the clock starts, as each VictoriaMetrics
    URL is: over HTTP both sides then time the same work, one GET of a ready URL and its body
    read (neither parses it). `rows_of` turns a Legion answer into rows, for the client-side
    average of the row without group_by (the one row that times parsing: its client must)."""

    def vm(query: str, step: int) -> Callable[[], Any]:
        q = urllib.parse.urlencode({"query": query, "start": lo / 1000, "end": end / 1000,
                                    "step": step})
        return lambda: vm_get(f"{vm_url}/api/v1/query_range?{q}")

    one, fleet = legion(QUERY_ONE), legion(QUERY_FLEET)
    nogroup = legion({**QUERY_FLEET, "group_by": None})  # before group_by: averaged client-side
    sides: dict[str, Callable[[], dict[str, float]]] = {
        "legion": lambda: {
            f"legion_one_{prefix}_ms": timed_ms(one, reps),
            f"legion_fleet_{prefix}_ms": timed_ms(fleet, reps),
            f"legion_fleet_nogroup_{prefix}_ms": timed_ms(
                lambda: client_average(rows_of(nogroup())), reps)},
        "vm": lambda: {
            f"vm_one_{prefix}_ms": timed_ms(vm('avg_over_time(system_cpu_usage_percent'
                                               '{host="host-001",cpu="total"}[1m])', 60), reps),
            f"vm_fleet_{prefix}_ms": timed_ms(vm('avg(avg_over_time(system_cpu_usage_percent'
                                                 '{cpu="total"}[5m]))', 300), reps)}}
    out: dict[str, float] = {}
    for side in order:
        out.update(sides[side]())
    return out


# ---- ingest ------------------------------------------------------------------------------------

def _vm_sender(url: str, bodies: list[bytes], go: Any, out: Any) -> None:
    go.wait()
    for body in bodies:
        vm_post(url, body)
    out.put(len(bodies))


def vm_bodies(frames: list[bytes]) -> list[bytes]:
    """Each Legion frame (one batch) as one VictoriaMetrics import request of the same points."""
    from legion.proto import decode

    bodies = []
    for f in frames:
        env = decode(f)
        b = env.body
        lines = []
        for s in np.unique(b.name_idx):
            m = b.name_idx == s
            lines.append(json.dumps({"metric": {"__name__": b.names[s], "host": env.node},
                                     "values": b.values[m].tolist(),
                                     "timestamps": b.ts_ms[m].tolist()}))
        bodies.append("\n".join(lines).encode())
    return bodies


def ingest_vm(work: Path, bodies: dict[str, list[bytes]], points: int) -> dict[str, float]:
    """Same batches, one HTTP import request each, 2 sender processes; wall and server CPU."""
    peer, url = start_victoria_metrics(work)
    try:
        proc = psutil.Process(peer.pid)
        go, out = mp.Event(), mp.Queue()
        ps = [mp.Process(target=_vm_sender, args=(url, b, go, out)) for b in bodies.values()]
        for p in ps:
            p.start()
        time.sleep(1.0)
        c0, t0 = cpu_seconds(proc), time.monotonic()
        go.set()
        sent = sum(out.get(timeout=600) for _ in ps)
        wall = time.monotonic() - t0
        http_get(url + "/internal/force_flush")
        cpu = cpu_seconds(proc) - c0
        for p in ps:
            p.join(30)
        stored = vm_count(url, '{__name__=~"bench_metric_.*"}', time.time() + 60, "1d")
    finally:
        peer.stop()
    offered = sent * points
    return {"vm_ingest_pts_per_s": stored / wall, "vm_ingest_pts_per_cpu_s": stored / cpu,
            "vm_ingest_lost": offered - stored}


def ingest_legion(work: Path, frames: dict[str, list[bytes]], points: int) -> dict[str, float]:
    """The same batches through `legionctl aggregator run` (bench/ingest.py's senders)."""
    from legion.cli.config import load_config
    from legion.cli.setup_cmds import add_agent_key
    from tests.conftest import make_setup

    cfg_path = make_setup(work / "legion-ingest")
    cfg = load_config(cfg_path)
    for n in frames:
        add_agent_key(cfg, n)
    cpu: dict[str, float] = {}

    def begin(pid: int) -> None:
        cpu["c0"] = cpu_seconds(psutil.Process(pid))

    def end(pid: int) -> None:
        cpu["s"] = cpu_seconds(psutil.Process(pid)) - cpu["c0"]

    rate, _st, acc = ingest_bench.end_to_end(cfg_path, list(frames), frames, 600.0,
                                             work / "agg.log", points, on_go=begin, on_done=end)
    return {"legion_ingest_pts_per_s": rate, "legion_ingest_pts_per_cpu_s":
            acc["stored"] / max(1e-9, cpu["s"]), "legion_ingest_lost": acc["unaccounted"]
            + acc.get("lost_in_zeromq", 0) + acc["rejected_by_aggregator"]}
