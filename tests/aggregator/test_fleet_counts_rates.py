"""Fleet numbers the dashboard shows: counter rates per series (network per interface, summed)
and health counts for hosts and agents from one place (`FleetBuilder.build`'s summary)."""

from __future__ import annotations

from typing import Any

from legion.aggregator.gateway.fleet import FleetBuilder
from legion.aggregator.gateway.hub_topics import topic_diff
from legion.cli.config import Config


def _row(node: str, metric: str, value: float, ts: int, **labels: str) -> dict[str, Any]:
    return {"node": node, "metric": metric, "value": value, "ts_ms": ts, "labels": labels}


def _net(ts: int, eth0: float, lo: float, sent: float) -> list[dict[str, Any]]:
    return [_row("h1", "system_network_received_bytes_total", eth0, ts, interface="eth0"),
            _row("h1", "system_network_received_bytes_total", lo, ts, interface="lo"),
            _row("h1", "system_network_sent_bytes_total", sent, ts, interface="eth0"),
            _row("h1", "system_cpu_usage_percent", 10.0, ts)]


def test_network_rates_are_per_interface_then_summed() -> None:
    b = FleetBuilder(Config())
    m = b.build(_net(1000, 1_000.0, 50_000.0, 10.0), [], now_ms=1000)["hosts"][0]["metrics"]
    assert "network_received_bytes_per_s" not in m  # one reading: no rate yet, never 0
    m = b.build(_net(3000, 5_000.0, 52_000.0, 410.0), [], now_ms=3000)["hosts"][0]["metrics"]
    assert m["network_received_bytes_per_s"] == 2_000.0 + 1_000.0
    assert m["network_sent_bytes_per_s"] == 200.0
    assert m["network_received_bytes_total"] == 57_000.0
    # eth0's counter resets (driver reload): lo's rate stays, the sum does not go negative
    m = b.build(_net(5000, 100.0, 54_000.0, 810.0), [], now_ms=5000)["hosts"][0]["metrics"]
    assert m["network_received_bytes_per_s"] == 1_000.0
    # a same-timestamp re-read (no new point between ticks) keeps the last rates
    m = b.build(_net(5000, 100.0, 54_000.0, 810.0), [], now_ms=5500)["hosts"][0]["metrics"]
    assert m["network_received_bytes_per_s"] == 1_000.0 and m["network_sent_bytes_per_s"] == 200.0


def test_summary_counts_hosts_and_agents_by_health() -> None:
    b = FleetBuilder(Config())
    sys_rows = [_row("h1", "system_cpu_usage_percent", 99.0, 1000),   # critical host, no agents
                _row("h2", "system_cpu_usage_percent", 10.0, 1000)]
    agent_rows = [_row("h2", "agent_response_time_ms", 4_600.0, 1000, agent_id="a1",
                       department="ops", quantile="p95")]              # warning agent
    s = b.build(sys_rows, agent_rows, now_ms=1000)["summary"]
    assert (s["hosts"], s["agents"], s["ok"], s["warning"], s["critical"]) == (2, 1, 1, 1, 1)
    assert s["host_health"] == {"ok": 1, "unknown": 0, "stale": 0, "warning": 0, "critical": 1}
    assert s["agent_health"] == {"ok": 0, "unknown": 0, "stale": 0, "warning": 1, "critical": 0}
    s = b.build(sys_rows[:1], [], now_ms=1000)["summary"]
    assert (s["ok"], s["warning"], s["critical"]) == (0, 0, 1)  # one critical host shows as 1


def test_summary_is_sent_when_only_counts_change() -> None:
    old = {"hosts": [{"node": "h1", "x": 1}], "summary": {"ok": 1}}
    new = {"hosts": [{"node": "h1", "x": 1}], "summary": {"ok": 0}}
    assert topic_diff(old, new) == {"summary": {"ok": 0}}
    assert topic_diff(new, new) == {}
