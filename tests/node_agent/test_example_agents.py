"""examples/instrumented_agents.py runs as a user runs it and its metrics reach a real node-agent
receiver (MonitorReceiver on an ipc:// socket): both agents, LLM calls, tool calls, messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from legion.node_agent.monitor_receiver import MonitorReceiver
from legion.proto import Sample

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "instrumented_agents.py"
pytestmark = pytest.mark.timeout(90)


def _sum(samples: list[Sample], name: str, **labels: str) -> float:
    """Newest value per label set, summed over the label sets matching `labels`."""
    newest: dict[tuple[tuple[str, str], ...], float] = {}
    for s in samples:
        d = dict(s.labels)
        if s.name == name and all(d.get(k) == v for k, v in labels.items()):
            newest[s.labels] = s.value
    return sum(newest.values())


def test_example_reports_both_agents(endpoint: str, receiver: MonitorReceiver) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--secs", "3", "--endpoint", endpoint],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "planner:" in proc.stdout and "researcher:" in proc.stdout
    got = receiver.drain(100_000)
    planner = {"agent_id": "planner", "department": "strategy"}
    researcher = {"agent_id": "researcher", "department": "research"}
    assert _sum(got, "agent_tasks_total", task_type="plan", status="ok", **planner) >= 5
    assert _sum(got, "agent_tasks_total", task_type="research", **researcher) >= 5
    assert _sum(got, "agent_llm_calls_total", model="gpt-4o-mini", **planner) >= 5
    assert _sum(got, "agent_llm_calls_total", model="claude-haiku", **researcher) >= 1
    assert _sum(got, "agent_tokens_total", type="output", **planner) > 0
    assert _sum(got, "agent_tool_calls_total", tool="web_search", **researcher) >= 5
    sent = _sum(got, "agent_messages_sent_to_total", to="researcher", **planner)
    received = _sum(got, "agent_messages_received_total", **researcher)
    assert sent >= 5 and 0 < received <= sent
    assert any(s.name == "agent_response_time_ms" and dict(s.labels).get("quantile") == "p95"
               for s in got)
