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
3. `--simulator`: the demo's fault schedule (`legion.demo.faults.demo_schedule`, one fault at a
   time; `--together`: the six at once, as tests/aggregator/alerts/test_simulator_faults) with
   two engines side by side on two copies of the data, the DEFAULT alerting config with AI
   severity on and off: incidents per fault, false incidents, notifications, faults detected,
   time to detect each (from the stored transitions).

The machine may be shared: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import gc
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


class _Phases:
    """Where a round's time goes: the journal's writes, GC pauses, the DuckDB WAL (a checkpoint
    empties it), to explain a slow round."""

    def __init__(self, eng: AlertEngine, db: Path) -> None:
        self.wal = Path(str(db) + ".wal")
        self.journal_s = self.gc_s = 0.0
        self._gc_t0 = 0.0
        save = eng.journal.save_alerts

        def timed_save(*a: Any, **kw: Any) -> None:
            t = time.perf_counter()
            try:
                save(*a, **kw)
            finally:
                self.journal_s += time.perf_counter() - t
        eng.journal.save_alerts = timed_save  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self.gc_s += time.perf_counter() - self._gc_t0

    def wal_bytes(self) -> int:
        return self.wal.stat().st_size if self.wal.exists() else 0

    def close(self) -> None:
        gc.callbacks.remove(self._gc)


def bench_evaluation(hosts: int, rounds: int, tmp: Path) -> dict[str, Any]:
    store = Store(tmp / "eval.duckdb")
    cfg = config_from_dict({"alerting": {"route": {"receiver": "log", "group_wait_secs": 0}}},
                           base_dir=tmp)
    eng = AlertEngine(cfg.aggregator_settings(), store)
    eng.dispatcher.start()
    ph = _Phases(eng, tmp / "eval.duckdb")
    per_round: list[dict[str, Any]] = []
    try:
        seq = 0
        read_s, eval_s = [], []
        for r in range(rounds):
            seq += 1
            now = int(time.time() * 1000)
            t = time.perf_counter()
            store.write([_fleet_batch(h, seq, now, hot=h % 10 == 0 and r >= 2)
                         for h in range(hosts)])
            write_s = time.perf_counter() - t
            t = time.perf_counter()
            store.latest("*")
            store.nodes()
            read_s.append(time.perf_counter() - t)
            ph.journal_s = ph.gc_s = 0.0
            wal0 = ph.wal_bytes()
            eval_s.append(eng.evaluate_once()["seconds"])
            per_round.append({"round": r, "write_s": round(write_s, 3),
                              "read_s": round(read_s[-1], 3), "eval_s": round(eval_s[-1], 3),
                              "journal_s": round(ph.journal_s, 3), "gc_s": round(ph.gc_s, 3),
                              "wal_before": wal0, "wal_after": ph.wal_bytes()})
        rules = len(eng.rules())
        firing = len(eng.alerts("firing"))
    finally:
        ph.close()
        eng.stop()
        store.close()
    med_eval, med_read = statistics.median(eval_s[2:]), statistics.median(read_s[2:])
    return {"hosts": hosts, "series": hosts * 11, "rules": rules, "firing": firing,
            "eval_seconds_p50": round(med_eval, 4), "eval_seconds_max": round(max(eval_s), 4),
            "baseline_read_seconds_p50": round(med_read, 4),
            "engine_over_read": round(med_eval / med_read, 2),
            "slowest_round": max(per_round, key=lambda x: x["eval_s"]),
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
    eng = AlertEngine(cfg.aggregator_settings(), store)
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


def bench_simulator(tmp: Path, together: bool = False) -> dict[str, Any]:
    """The demo's fault schedule (`demo_schedule`: one fault at a time, 90 s each, 150 s apart;
    `together`: the test's six at once) against two engines on two copies of the data, the
    DEFAULT alerting config with AI severity on and off."""
    import zmq

    from legion.demo.faults import FaultBoard, FaultSpec, demo_schedule
    from legion.demo.simulator import Simulator
    from legion.node_agent.monitor_receiver import MonitorReceiver
    from tests.aggregator.alerts import test_simulator_faults as t

    learn_at = t.WARM + t.LEARN
    if together:
        start = learn_at + t.QUIET
        plan = tuple(FaultSpec(f, a, start, t.FAULT) for f, a in t.PLAN.items())
    else:
        plan = demo_schedule()
    tail = 60.0
    end = max(f.start_secs + f.duration_secs for f in plan) + tail
    ep = f"ipc://{tempfile.mkdtemp(prefix='lm', dir='/tmp')}/run/monitor.sock"
    ctx = zmq.Context()
    recv = MonitorReceiver(ctx, ep)
    runs = {}
    for ai in (True, False):
        store = Store(tmp / f"sim-{ai}.duckdb")
        cfg = config_from_dict({"collection_interval": 1.0, "alerting": {
            **t.ALERTING, "ai_severity": ai}}, base_dir=tmp)
        bands = t.Bands()
        eng = AlertEngine(cfg.aggregator_settings(), store, bands=bands)
        eng.dispatcher.start()
        runs[ai] = (store, eng, bands)
    board = FaultBoard(**t.BOARD) if together else FaultBoard()  # the demo's own strengths
    sim = Simulator(ep, seed=2, faults=plan, board=board)
    t0 = time.monotonic()
    wall0 = int(time.time() * 1000)
    seq, learnt, rounds = 0, False, []
    sim.start()
    try:
        while time.monotonic() - t0 < end:
            time.sleep(0.5)
            samples = recv.drain()
            if samples:
                seq += 1
                for store, _, _ in runs.values():
                    store.write([IncomingBatch(t.NODE, 1, seq, MetricsBatch.from_samples(samples),
                                               int(time.time() * 1000))])
            if time.monotonic() - t0 < learn_at:
                continue
            if not learnt:
                for store, _, bands in runs.values():
                    bands.learn(store, int(time.time() * 1000))
                learnt = True
            for _, eng, _ in runs.values():
                rounds.append(eng.evaluate_once()["seconds"])
        out: dict[str, Any] = {"schedule": "together" if together else "demo_schedule",
                               "faults": [f"{f.name}:{f.agent_id}:{f.start_secs:g}:"
                                          f"{f.duration_secs:g}" for f in plan],
                               "run_secs": round(end), "round_seconds_max": round(max(rounds), 3)}
        for ai, (_, eng, _) in runs.items():
            out["ai_on" if ai else "ai_off"] = _score(eng, plan, wall0, learn_at, tail)
        return out
    finally:
        sim.stop()
        for store, eng, _ in runs.values():
            eng.stop()
            store.close()
        recv.close()
        ctx.term()


def _score(eng: AlertEngine, plan: Any, wall0: int, learn_at: float,
           tail: float) -> dict[str, Any]:
    """Incidents per fault window (fault start .. end + `tail`), false incidents (outside every
    window of their agent), time to detect each fault (first alert of its agent turning firing,
    from the stored transitions), notifications sent."""
    import json as _json

    def window(f: Any) -> tuple[int, int]:
        return (wall0 + int(f.start_secs * 1000),
                wall0 + int((f.start_secs + f.duration_secs + tail) * 1000))

    incidents = [i for i in eng.incidents() if i["opened_ms"] >= wall0 + learn_at * 1000]
    events = eng.journal.events(wall0, limit=1_000_000)
    per_fault, false_inc = {}, []
    for f in plan:
        lo, hi = window(f)
        mine = [i for i in incidents if lo <= i["opened_ms"] < hi
                and _json.loads(i["group_key"].split(":", 2)[2]).get("agent_id") == f.agent_id]
        fired = [e["ts_ms"] for e in events if e["to"] == "firing" and lo <= e["ts_ms"] < hi
                 and e["labels"].get("agent_id") == f.agent_id]
        per_fault[f"{f.name}:{f.agent_id}"] = {
            "incidents": len(mine),
            "seconds_to_detect": round((min(fired) - lo) / 1000, 1) if fired else None,
            "rules": sorted({e["rule_id"] for e in events if e["to"] == "firing"
                             and lo <= e["ts_ms"] < hi
                             and e["labels"].get("agent_id") == f.agent_id})}
    for i in incidents:
        aid = _json.loads(i["group_key"].split(":", 2)[2]).get("agent_id")
        if not any(f.agent_id == aid and window(f)[0] <= i["opened_ms"] < window(f)[1]
                   for f in plan):
            rules = sorted({e["rule_id"] for e in events if e["alert_id"] in i["alerts"]})
            false_inc.append(f"{aid or i['group_key']} at "
                             f"{(i['opened_ms'] - wall0) / 1000:.0f} s: {', '.join(rules)}")
    sent = [n for n in eng.journal.notifications(limit=100_000) if n["outcome"] == "sent"]
    return {"faults_detected": sum(1 for v in per_fault.values() if v["incidents"]),
            "false_incidents": len(false_inc), "false_incident_groups": false_inc,
            "notifications_sent": len(sent), "per_fault": per_fault}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--latency-samples", type=int, default=40)
    p.add_argument("--simulator", action="store_true",
                   help="the demo's fault schedule on the simulator (about 16 minutes)")
    p.add_argument("--together", action="store_true",
                   help="with --simulator: the test's six faults at once (about 3 minutes)")
    p.add_argument("--skip-fleet", action="store_true",
                   help="skip the evaluation-cost and latency parts")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res: dict[str, Any] = {}
        if not a.skip_fleet:
            res["evaluation"] = bench_evaluation(a.hosts, a.rounds, tmp)
            res["latency"] = bench_latency(a.latency_samples, tmp)
        if a.simulator:
            res["simulator"] = bench_simulator(tmp, a.together)
    print(json.dumps(res, indent=2) if a.json else "\n".join(
        f"{k}: {json.dumps(v)}" for k, v in res.items()))


if __name__ == "__main__":
    main()
