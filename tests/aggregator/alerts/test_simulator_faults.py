"""The demo simulator's six faults against the engine, on real data: the simulator's 18 real
AgentMonitors push over ZeroMQ to a real MonitorReceiver, every sample is stored in a real
DuckDB store, and the engine evaluates once a second on the real clock.

Timeline: 20 s warm-up (success-rate windows fill), 30 s from which the normal bands of each
agent's cpu and memory are learnt (the project's `band_from_store`), a quiet
window of 40 s that must give no incident, then all six faults at once on six agents for 40 s
and 25 s after: exactly one incident per faulted agent, naming its node and agent, none for the
twelve others.

Rules: the seed's success-rate rule (below 80, with a clear value), response time p95 above
20 s (the seed's 5 s is below this simulator's normal p95, which reaches 12 s), agent silent,
a backlog (queue depth above 50, at load 1.0; at the demo's load 2.0 the software engineer's
queue grows without bound even with no fault) and ml_based rules over the learnt cpu and memory
bands. Measured here on a 2-core shared machine; the
faults run at cpu_duty 0.9 of one core and leak 8 MiB/s (up to 512 MiB): the simulator's
resource model shares the host among agents, so on a many-core or large-memory host the same
fault is a smaller share and needs a longer fault or a narrower band to stand out.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from legion.aggregator.analytics_bridge import band_from_store
from legion.aggregator.store import IncomingBatch, Store
from legion.cli.config import config_from_dict
from legion.demo.faults import FaultBoard, FaultSpec
from legion.demo.simulator import Simulator
from legion.node_agent.monitor_receiver import MonitorReceiver
from legion.proto import MetricsBatch

pytestmark = pytest.mark.timeout(400)

PLAN = {"slow": "market-researcher", "failing": "qa-tester", "cpu_hog": "devops-engineer",
        "memory_leak": "data-analyst", "token_runaway": "sales-assistant",
        "partition": "support-agent"}
WARM, LEARN, QUIET, FAULT, TAIL = 20, 30, 40, 40, 25
NODE = "sim-1"
LOAD = 1.0  # at the demo's 2.0 the software engineer's queue grows without bound even when quiet
BANDED = ("agent_cpu_usage_percent", "agent_memory_usage_percent")

RULES = [
    {"rule_id": "agent_failure_critical", "metric_pattern": "*_success_rate_percent",
     "threshold_type": "static", "threshold_value": 80.0, "clear_value": 90.0,
     "keep_firing_for_secs": 15, "for_secs": 3, "severity": "high"},
    {"rule_id": "slow_responses", "metric_pattern": "agent_response_time_ms",
     "threshold_type": "static", "threshold_value": 20000.0, "for_secs": 3,
     "keep_firing_for_secs": 15, "matchers": ["quantile=p95", "task_type=__all__"],
     "severity": "high"},
    # A band learnt from 30 s of one agent's CPU is narrow: a few seconds outside it are
    # ordinary (seen once at 10.6 % in a quiet window); the cpu_hog fault lasts 40 s.
    {"rule_id": "agent_resources_unusual", "metric_pattern": "agent_*_usage_percent",
     "threshold_type": "ml_based", "for_secs": 10, "keep_firing_for_secs": 15,
     "severity": "medium"},
    {"rule_id": "agent_backlog", "metric_pattern": "agent_task_queue_depth",
     "threshold_type": "static", "threshold_value": 50.0, "for_secs": 3,
     "keep_firing_for_secs": 15, "severity": "medium"},
    {"rule_id": "agent_silent", "metric_pattern": "agent_*", "threshold_type": "agent_silent",
     "keep_firing_for_secs": 15, "severity": "high"},
]


class Bands:
    """band_for(node, metric, labels) over bands learnt from the store."""

    def __init__(self) -> None:
        self.bands: dict[tuple[str, str, str], object] = {}

    def learn(self, store: Store, now_ms: int) -> None:
        for s in store.series(node=NODE):
            if s["metric"] in BANDED:
                b = band_from_store(store, NODE, s["metric"], s["labels"], now_ms=now_ms,
                                    days=1, step_ms=None, min_points=10, margin=3.0)
                if b is not None:
                    self.bands[(NODE, s["metric"], json.dumps(s["labels"], sort_keys=True))] = b

    def band_for(self, node, metric, labels=None):
        return self.bands.get((node, metric, json.dumps(dict(labels or {}), sort_keys=True)))


def incidents_by_agent(engine, since_ms):
    out: dict[str, int] = {}
    for inc in engine.incidents():
        if inc["opened_ms"] < since_ms:
            continue
        labels = json.loads(inc["group_key"].split(":", 2)[2])
        assert labels["node"] == NODE
        out[labels.get("agent_id") or "(node)"] = out.get(labels.get("agent_id") or "(node)",
                                                          0) + 1
    return out


def test_each_fault_one_incident_quiet_run_none(tmp_path):
    from legion.aggregator.alerts.engine import AlertEngine

    d = tempfile.mkdtemp(prefix="lm", dir="/tmp")
    ep = f"ipc://{d}/run/monitor.sock"
    ctx = zmq.Context()
    recv = MonitorReceiver(ctx, ep)
    store = Store(tmp_path / "legion.duckdb")
    bands = Bands()
    cfg = config_from_dict({"collection_interval": 1.0, "alerting": {
        "default_rules": False, "ai_severity": True, "rules": RULES,
        "route": {"receiver": "log", "group_by": ["node", "agent_id"], "group_wait_secs": 0,
                  "group_interval_secs": 5, "repeat_interval_secs": 3600}}},
        base_dir=tmp_path)
    engine = AlertEngine(cfg, store, bands=bands)
    engine.dispatcher.start()
    start_at = WARM + LEARN + QUIET
    board = FaultBoard(cpu_duty=0.9, leak_bytes_per_sec=8 << 20, leak_max_bytes=512 << 20)
    sim = Simulator(ep, seed=1, load=LOAD, board=board, faults=[FaultSpec(f, a, start_at, FAULT)
                                        for f, a in PLAN.items()])
    seq = 0
    t0 = time.monotonic()
    marks: dict[str, int] = {}
    try:
        sim.start()
        while time.monotonic() - t0 < start_at + FAULT + TAIL:
            time.sleep(0.5)
            samples = recv.drain()
            if samples:
                seq += 1
                store.write([IncomingBatch(NODE, 1, seq, MetricsBatch.from_samples(samples),
                                           int(time.time() * 1000))])
            el = time.monotonic() - t0
            if el < WARM + LEARN:
                continue
            if "learnt" not in marks:
                bands.learn(store, int(time.time() * 1000))
                marks["learnt"] = int(time.time() * 1000)
            if el >= start_at and "faults" not in marks:
                marks["faults"] = int(time.time() * 1000)
            engine.evaluate_once()
        quiet_only = {}
        for inc in engine.incidents():
            if marks["learnt"] <= inc["opened_ms"] < marks["faults"]:
                labels = json.loads(inc["group_key"].split(":", 2)[2])
                quiet_only[labels.get("agent_id")] = inc
        why = [(a["rule_id"], a["agent_id"], a["labels"].get("metric"), a["value"],
                a["annotations"].get("summary")) for a in engine.alerts()
               if any(a["id"] in i["alerts"] for i in quiet_only.values())]
        assert quiet_only == {}, f"quiet window raised incidents: {why}"
        got = incidents_by_agent(engine, marks["faults"])
        assert len(bands.bands) >= 2 * 17
        dbg = []
        for (node, metric, lb), b in bands.bands.items():
            if any(a in lb for a in ("data-analyst", "devops-engineer")):
                rows = store.query(metric, node=NODE, labels=json.loads(lb),
                                   since_ms=marks["faults"])
                dbg.append((metric, json.loads(lb)["agent_id"], "band high",
                            round(float(b.high.max()), 2), "fault max",
                            round(max(r["value"] for r in rows), 2)))
        assert got == {a: 1 for a in PLAN.values()}, (sorted(got.items()), dbg)
    finally:
        sim.stop()
        engine.stop()
        store.close()
        recv.close()
        ctx.term()
        Path(d, "run", "monitor.sock").unlink(missing_ok=True)
