"""The demo simulator's six faults against the engine's DEFAULT configuration, on real data:
the simulator's 18 real AgentMonitors push over ZeroMQ to a real MonitorReceiver, every sample
is stored in a real DuckDB store, and the engine evaluates twice a second on the real clock.

Timeline: 10 s warm-up, 30 s from which the normal bands of each agent's cpu and memory are
learnt (the project's `band_from_store`, over all 40 s; the engine starts once the simulator's
30 s success-rate windows are full), a quiet window of 45 s that must give no incident, then
all six faults at once on six agents for 25 s and 15 s after: exactly one incident per faulted
agent, naming its node and agent, none for the twelve others (so those twelve are watched quiet
for 85 s). Every fault is detected within 4-10 s of its start (18.7 s for the memory leak at 8
MiB/s, hence 16 MiB/s here); the run was 170 s with a 20 s warm-up, 60 s quiet, 40 s faults and
20 s tail.

Configuration: `alerting` left at its defaults (the default rules, which include the seed's two
rules, the default route, AI severity on) and the demo's load (2.0), except
`min_band_history_secs`: the default (1 h) refuses bands learnt from less history, and this test
can only afford 30 s (the bands here are learnt with a wide margin, 3 robust sd, instead).
The cpu_hog and memory_leak faults run at the strengths of `BOARD` (CPU duty 0.9 of a core, 16
MiB/s) rather than the demo's (0.5, 4 MiB/s): on the shared 2-core machine (load average ~13)
the hog thread only gets its fair share of a core, and at 0.5 its CPU stayed at the edge of the
agent's band (seen undetected in one 40 s run); the demo's faults last 90 s.
What detects what: slow and token_runaway - `agent_response_time_high` (p95 > 5 s); failing -
`agent_success_rate_low` and `agent_failure_critical`; cpu_hog - `high_cpu_warning`; memory_leak
- `high_memory_warning`; partition - `agent_silent`.
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
WARM, LEARN, QUIET, FAULT, TAIL = 10, 30, 45, 25, 15
NODE = "sim-1"
BANDED = ("agent_cpu_usage_percent", "agent_memory_usage_percent")

ALERTING = {"min_band_history_secs": LEARN - 5}
"""The default `alerting` section but for the band history this test can afford."""
BOARD = {"cpu_duty": 0.9, "leak_bytes_per_sec": 16 << 20, "leak_max_bytes": 512 << 20}
"""Fault strengths (see the module's docstring)."""


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


def detection_secs(engine, since_ms):
    """Seconds from the faults' start to the first alert of each faulted agent turning firing
    (from the stored transitions, so an alert that resolved and came back still counts)."""
    first: dict[str, int] = {}
    for e in engine.journal.events(since_ms, limit=1_000_000):
        aid = e["labels"].get("agent_id")
        if e["to"] == "firing" and aid in PLAN.values():
            first[aid] = min(first.get(aid, e["ts_ms"]), e["ts_ms"])
    return {a: (round((first[a] - since_ms) / 1000, 1) if a in first else None)
            for a in PLAN.values()}


def test_each_fault_one_incident_quiet_run_none(tmp_path):
    from legion.aggregator.alerts.engine import AlertEngine

    d = tempfile.mkdtemp(prefix="lm", dir="/tmp")
    ep = f"ipc://{d}/run/monitor.sock"
    ctx = zmq.Context()
    recv = MonitorReceiver(ctx, ep)
    store = Store(tmp_path / "legion.duckdb")
    bands = Bands()
    cfg = config_from_dict({"collection_interval": 1.0, "alerting": ALERTING}, base_dir=tmp_path)
    engine = AlertEngine(cfg.aggregator_settings(), store, bands=bands)
    engine.dispatcher.start()
    start_at = WARM + LEARN + QUIET
    sim = Simulator(ep, seed=1, board=FaultBoard(**BOARD),
                    faults=[FaultSpec(f, a, start_at, FAULT) for f, a in PLAN.items()])
    seq = 0
    t0 = last_write = time.monotonic()
    gaps: list[tuple[float, float]] = []  # (seconds since the last write, at second) per write
    marks: dict[str, int] = {}
    try:
        sim.start()
        while time.monotonic() - t0 < start_at + FAULT + TAIL:
            time.sleep(0.5)
            el = time.monotonic() - t0
            if el >= WARM + LEARN and "learnt" not in marks:
                # Learnt before this round's write: the loop stands in for the aggregator's
                # ingest, which never waits for band learning. Once in CI, node_down fired at
                # the first evaluation after the learn (the node silent for over 10 s); the
                # learn takes 0.1 s on an idle machine, so the cause is not proven. `gaps`
                # names the harness's own stalls if it happens again.
                bands.learn(store, int(time.time() * 1000))
                marks["learnt"] = int(time.time() * 1000)
            samples = recv.drain()
            if samples:
                seq += 1
                now = time.monotonic()
                gaps.append((round(now - last_write, 1), round(now - t0, 1)))
                last_write = now
                store.write([IncomingBatch(NODE, 1, seq, MetricsBatch.from_samples(samples),
                                           int(time.time() * 1000))])
            if el < WARM + LEARN:
                continue
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
        assert quiet_only == {}, (f"quiet window raised incidents: {why}; the harness's longest "
                                  f"gaps between writes (s, at s): {sorted(gaps)[-3:]}")
        got = incidents_by_agent(engine, marks["faults"])
        assert len(bands.bands) >= 2 * 17
        dbg = []
        for (_node, metric, lb), b in bands.bands.items():
            if any(a in lb for a in ("data-analyst", "devops-engineer")):
                rows = store.query(metric, node=NODE, labels=json.loads(lb),
                                   since_ms=marks["faults"])
                dbg.append((metric, json.loads(lb)["agent_id"], "band high",
                            round(float(b.high.max()), 2), "fault max",
                            round(max(r["value"] for r in rows), 2)))
        assert got == {a: 1 for a in PLAN.values()}, (sorted(got.items()), dbg)
        for agent, secs in detection_secs(engine, marks["faults"]).items():
            assert secs is not None and secs <= FAULT + TAIL, (agent, secs)
    finally:
        sim.stop()
        engine.stop()
        store.close()
        recv.close()
        ctx.term()
        Path(d, "run", "monitor.sock").unlink(missing_ok=True)
