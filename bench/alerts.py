"""Alerting: evaluation cost against fleet size, breach-stored → webhook latency, and
notifications with and without AI-assisted severity on the simulator's faults.

Usage: `python bench/alerts.py [--hosts 1000] [--rounds 20] [--latency-samples 40]
                                [--simulator] [--json]`

1. Evaluation: a real Store with `--hosts` hosts (cpu total, memory, disk) and two agents per
   host (p95 response time, success rate, cpu, memory), every default rule; seconds per
   `evaluate_once` against `analysis_interval` (5 s). Baseline in the same run: the store reads
   one round needs (`latest("*")` + `nodes()`), so the ratio is what the engine adds.
2. Latency: the engine thread (evaluation every 1 s) and a real local webhook receiver; a
   breaching point is stored, the time until the webhook has it is measured (p50/p99).
   Baseline: the evaluation interval itself (a breach waits on average half of it).
3. `--simulator`: the six demo faults at once (as tests/aggregator/alerts/test_simulator_faults)
   with two engines side by side on two copies of the data, AI severity on and off: incidents,
   notifications, faults detected, time to detect each.

The machine may be shared: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legion.aggregator.alerts.engine import AlertEngine  # noqa: E402
from legion.aggregator.store import IncomingBatch, Store  # noqa: E402
from legion.cli.config import config_from_dict  # noqa: E402
from legion.proto import MetricsBatch, Sample, canonical_labels  # noqa: E402


def _fleet_batch(host: int, seq: int, ts: int, hot: bool) -> IncomingBatch:
    s = [Sample("system_cpu_usage_percent", (), 95.0 if hot else 30.0, ts),
         Sample("system_memory_usage_percent", (), 50.0, ts),
         Sample("system_disk_usage_percent", canonical_labels({"mount": "/"}), 40.0, ts)]
    for a in range(2):
        lb = {"agent_id": f"h{host}-a{a}", "department": "ops"}
        s += [Sample("agent_response_time_ms", canonical_labels(
                  {**lb, "quantile": "p95", "task_type": "__all__"}), 800.0, ts),
              Sample("agent_success_rate_percent", canonical_labels(lb), 99.0, ts),
              Sample("agent_cpu_usage_percent", canonical_labels(lb), 10.0, ts),
              Sample("agent_memory_usage_percent", canonical_labels(lb), 2.0, ts)]
    return IncomingBatch(f"host-{host:04d}", 1, seq, MetricsBatch.from_samples(s), ts)


def bench_evaluation(hosts: int, rounds: int, tmp: Path) -> dict[str, Any]:
    store = Store(tmp / "eval.duckdb")
    cfg = config_from_dict({"alerting": {"route": {"receiver": "log", "group_wait_secs": 0}}},
                           base_dir=tmp)
    eng = AlertEngine(cfg, store)
    eng.dispatcher.start()
    try:
        seq = 0
        read_s, eval_s = [], []
        for r in range(rounds):
            seq += 1
            now = int(time.time() * 1000)
            store.write([_fleet_batch(h, seq, now, hot=h % 10 == 0 and r >= 2)
                         for h in range(hosts)])
            t = time.perf_counter()
            store.latest("*")
            store.nodes()
            read_s.append(time.perf_counter() - t)
            eval_s.append(eng.evaluate_once()["seconds"])
        rules = len(eng.rules())
        firing = len(eng.alerts("firing"))
    finally:
        eng.stop()
        store.close()
    med_eval, med_read = statistics.median(eval_s[2:]), statistics.median(read_s[2:])
    return {"hosts": hosts, "series": hosts * 11, "rules": rules, "firing": firing,
            "eval_seconds_p50": round(med_eval, 4), "eval_seconds_max": round(max(eval_s), 4),
            "baseline_read_seconds_p50": round(med_read, 4),
            "engine_over_read": round(med_eval / med_read, 2),
            "share_of_analysis_interval": round(med_eval / cfg.analysis_interval, 4)}


def bench_latency(samples: int, tmp: Path) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "aggregator" / "alerts"))
    from receiver import Receiver  # the tests' real local HTTP receiver

    hook = Receiver()
    store = Store(tmp / "lat.duckdb")
    interval = 1.0
    cfg = config_from_dict({"collection_interval": 1.0, "alerting": {
        "default_rules": False, "evaluation_interval_secs": interval,
        "rules": [{"rule_id": "cpu", "metric_pattern": "system_cpu_usage_percent",
                   "threshold_type": "static", "threshold_value": 80.0}],
        "receivers": [{"name": "hook", "type": "webhook", "url": hook.url}],
        "route": {"receiver": "hook", "group_by": ["node"], "group_wait_secs": 0,
                  "group_interval_secs": 0}}}, base_dir=tmp)
    eng = AlertEngine(cfg, store)
    eng.start()
    lat = []
    try:
        for i in range(samples):
            node = f"n{i}"
            have = len(hook.posts)
            t0 = time.time()
            store.write([IncomingBatch(node, 1, 1, MetricsBatch.from_samples(
                [Sample("system_cpu_usage_percent", (), 99.0, int(t0 * 1000))]),
                int(t0 * 1000))])
            deadline = t0 + 30
            while len(hook.posts) == have and time.time() < deadline:
                time.sleep(0.005)
            lat.append(time.time() - t0)
    finally:
        eng.stop()
        store.close()
        hook.close()
    lat.sort()
    return {"samples": samples, "evaluation_interval_secs": interval,
            "p50_secs": round(lat[len(lat) // 2], 3),
            "p99_secs": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3),
            "baseline_half_interval_secs": interval / 2,
            "p50_over_half_interval": round(lat[len(lat) // 2] / (interval / 2), 2)}


def bench_simulator(tmp: Path) -> dict[str, Any]:
    import zmq

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from legion.demo.faults import FaultBoard, FaultSpec
    from legion.demo.simulator import Simulator
    from legion.node_agent.monitor_receiver import MonitorReceiver
    from tests.aggregator.alerts import test_simulator_faults as t

    ep = f"ipc://{tempfile.mkdtemp(prefix='lm', dir='/tmp')}/run/monitor.sock"
    ctx = zmq.Context()
    recv = MonitorReceiver(ctx, ep)
    runs = {}
    for ai in (True, False):
        store = Store(tmp / f"sim-{ai}.duckdb")
        cfg = config_from_dict({"collection_interval": 1.0, "alerting": {
            "default_rules": False, "ai_severity": ai, "rules": t.RULES,
            "route": {"receiver": "log", "group_by": ["node", "agent_id"],
                      "group_wait_secs": 0, "group_interval_secs": 5,
                      "repeat_interval_secs": 60}}}, base_dir=tmp)
        bands = t.Bands()
        eng = AlertEngine(cfg, store, bands=bands)
        eng.dispatcher.start()
        runs[ai] = (store, eng, bands)
    start_at = t.WARM + t.LEARN + t.QUIET
    board = FaultBoard(cpu_duty=0.9, leak_bytes_per_sec=8 << 20, leak_max_bytes=512 << 20)
    sim = Simulator(ep, seed=2, load=t.LOAD, board=board,
                    faults=[FaultSpec(f, a, start_at, t.FAULT) for f, a in t.PLAN.items()])
    t0 = time.monotonic()
    seq, learnt, fault_ms = 0, False, 0
    sim.start()
    try:
        while time.monotonic() - t0 < start_at + t.FAULT + t.TAIL:
            time.sleep(0.5)
            samples = recv.drain()
            if samples:
                seq += 1
                for store, _, _ in runs.values():
                    store.write([IncomingBatch(t.NODE, 1, seq, MetricsBatch.from_samples(samples),
                                               int(time.time() * 1000))])
            el = time.monotonic() - t0
            if el < t.WARM + t.LEARN:
                continue
            if not learnt:
                for store, _, bands in runs.values():
                    bands.learn(store, int(time.time() * 1000))
                learnt = True
            if el >= start_at and not fault_ms:
                fault_ms = int(time.time() * 1000)
            for _, eng, _ in runs.values():
                eng.evaluate_once()
        out = {}
        for ai, (store, eng, _) in runs.items():
            got = t.incidents_by_agent(eng, fault_ms)
            detect = {}
            for a in t.PLAN.values():
                fired = [x["fired_ms"] for x in eng.alerts() if x["agent_id"] == a
                         and x["fired_ms"] and x["fired_ms"] >= fault_ms]
                detect[a] = round((min(fired) - fault_ms) / 1000, 1) if fired else None
            sent = [n for n in eng.journal.notifications() if n["outcome"] == "sent"]
            out["ai_on" if ai else "ai_off"] = {
                "incidents_after_faults": sum(got.values()),
                "false_incidents": sum(n for a, n in got.items() if a not in t.PLAN.values()),
                "faults_detected": sum(1 for a in t.PLAN.values() if got.get(a)),
                "notifications_sent": len(sent), "seconds_to_detect": detect}
        return out
    finally:
        sim.stop()
        for store, eng, _ in runs.values():
            eng.stop()
            store.close()
        recv.close()
        ctx.term()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--latency-samples", type=int, default=40)
    p.add_argument("--simulator", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res: dict[str, Any] = {"evaluation": bench_evaluation(a.hosts, a.rounds, tmp),
                               "latency": bench_latency(a.latency_samples, tmp)}
        if a.simulator:
            res["simulator"] = bench_simulator(tmp)
    print(json.dumps(res, indent=2) if a.json else "\n".join(
        f"{k}: {json.dumps(v)}" for k, v in res.items()))


if __name__ == "__main__":
    main()
