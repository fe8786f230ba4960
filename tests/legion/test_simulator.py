"""The Enterprise Legion simulator against a real MonitorReceiver over ipc://."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import zmq

from legion.demo.faults import FaultBoard, FaultSpec, demo_schedule
from legion.demo.roster import AGENT_IDS
from legion.demo.simulator import Simulator
from legion.kernel.errors import ConfigError
from legion.node_agent.monitor_receiver import MonitorReceiver
from legion.proto import Sample

pytestmark = pytest.mark.timeout(90)


def pump(r: MonitorReceiver, got: list[Sample], until: Callable[[], bool],
         timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += r.drain(100_000)
        if until():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout}s")


def values(got: list[Sample], name: str, agent: str, since_ms: int = 0,
           **labels: str) -> list[float]:
    out = []
    for s in got:
        d = dict(s.labels)
        if (s.name == name and d.get("agent_id") == agent and s.ts_ms >= since_ms
                and all(d.get(k) == v for k, v in labels.items())):
            out.append(s.value)
    return out


def test_all_18_agents_report(endpoint: str, receiver: MonitorReceiver) -> None:
    sim = Simulator(endpoint, seed=3, time_scale=5.0, interval_secs=0.25)
    got: list[Sample] = []
    sim.start()
    try:
        def all_agents() -> bool:
            return {dict(s.labels).get("agent_id") for s in got
                    if s.name == "agent_tasks_total" and s.value > 0} >= set(AGENT_IDS)
        pump(receiver, got, all_agents)
        names = {s.name for s in got}
        for n in ("agent_response_time_ms", "agent_success_rate_percent", "agent_tokens_total",
                  "agent_llm_cost_usd_total", "agent_tool_calls_total", "agent_cpu_usage_percent",
                  "agent_memory_usage_percent", "agent_task_queue_depth",
                  "agent_messages_sent_total", "agent_messages_received_total"):
            assert n in names, n
        assert sum(values(got, "agent_messages_received_total", "knowledge-curator")) > 0
        assert receiver.stats()["rejected"] == {}
    finally:
        sim.stop()
        sim.stop()  # idempotent
    assert sim.error is None


def test_faults_change_the_metrics(endpoint: str, receiver: MonitorReceiver) -> None:
    board = FaultBoard(leak_bytes_per_sec=256 << 20, leak_max_bytes=192 << 20, cpu_duty=0.5)
    sim = Simulator(endpoint, seed=5, time_scale=5.0, interval_secs=0.25, board=board,
                    success_window_secs=1.0, load=3.0)
    got: list[Sample] = []
    sim.start()
    try:
        # both baselines must have arrived (agents flush independently: waiting for one only
        # made max() of the other an empty sequence now and then)
        pump(receiver, got, lambda: bool(values(got, "agent_memory_usage_percent",
                                                "data-analyst")) and bool(
            values(got, "agent_cpu_usage_percent", "devops-engineer")))
        mem_before = values(got, "agent_memory_usage_percent", "data-analyst")[-1]
        cpu_before = max(values(got, "agent_cpu_usage_percent", "devops-engineer"))
        t0 = int(time.time() * 1000)
        sim.inject("failing", "qa-tester", 20)
        sim.inject("cpu_hog", "devops-engineer", 10)
        sim.inject("memory_leak", "data-analyst", 10)
        sim.inject("partition", "support-agent", 20)
        time.sleep(1.5)
        t1 = int(time.time() * 1000)
        pump(receiver, got, lambda: len(values(got, "agent_success_rate_percent", "qa-tester",
                                               since_ms=t1)) >= 2 and bool(
            values(got, "agent_tasks_total", "sales-assistant", since_ms=t1 + 300)))
        t2 = int(time.time() * 1000)
        assert min(values(got, "agent_success_rate_percent", "qa-tester", since_ms=t1)) < 70
        assert max(values(got, "agent_cpu_usage_percent", "devops-engineer", since_ms=t0)) > \
            cpu_before + 5
        assert max(values(got, "agent_memory_usage_percent", "data-analyst", since_ms=t0)) > \
            mem_before + 0.3
        # the partitioned agent went silent while its colleagues kept reporting
        assert values(got, "agent_tasks_total", "support-agent", since_ms=t1 + 300) == []
        assert values(got, "agent_tasks_total", "sales-assistant", since_ms=t1 + 300)
        assert {f[0] for f in sim.stats()["faults"]} >= {"failing", "partition"}
        assert t2 > t1
    finally:
        sim.stop()
    assert board.leaked_bytes("data-analyst") == 0  # the leak is given back
    assert sim.error is None


def test_token_runaway_raises_cost(endpoint: str, receiver: MonitorReceiver) -> None:
    sim = Simulator(endpoint, seed=9, time_scale=5.0, interval_secs=0.25, load=3.0,
                    faults=["token_runaway:support-agent:1:30"])
    got: list[Sample] = []
    sim.start()
    try:
        pump(receiver, got, lambda: len(values(got, "agent_tokens_total", "support-agent",
                                               type="output")) >= 16)
        out = values(got, "agent_tokens_total", "support-agent", type="output")
        calls = values(got, "agent_llm_calls_total", "support-agent")
        # after the fault started (5 s of sim time = 1 s real), tokens per call jump ~x12
        assert out[-1] / calls[-1] > 3 * 350
    finally:
        sim.stop()


def test_bad_faults_are_config_errors(endpoint: str) -> None:
    sim = Simulator(endpoint)
    with pytest.raises(ConfigError):
        sim.inject("meteor", "qa-tester", 10)
    with pytest.raises(ConfigError):
        sim.inject("slow", "nobody", 10)
    with pytest.raises(ConfigError):
        Simulator(endpoint, faults=["slow:qa-tester:x:1"])
    with pytest.raises(ConfigError):
        FaultSpec.parse("slow:qa-tester")
    assert len(demo_schedule()) == 6
    sim.stop()  # safe before start


def test_module_cli_runs_standalone(endpoint: str, receiver: MonitorReceiver) -> None:
    ctx = zmq.Context()
    ep2 = endpoint.replace("monitor.sock", "host2.sock")
    r2 = MonitorReceiver(ctx, ep2)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "legion.demo.simulator", "--endpoints", f"{endpoint},{ep2}",
             "--duration", "3", "--time-scale", "5", "--interval", "0.5",
             "--fault", "slow:legal-reviewer:0:5"],
            capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        one = {dict(s.labels).get("agent_id") for s in receiver.drain(1_000_000)}
        two = {dict(s.labels).get("agent_id") for s in r2.drain(1_000_000)}
        # departments alternate between the two simulated hosts
        assert "ceo-orchestrator" in one and "market-researcher" in two
        assert not (one & two) and len(one | two) == 18
        assert receiver.stats()["lost"] == 0 and r2.stats()["lost"] == 0  # seq per endpoint
    finally:
        r2.close()
        ctx.term()
