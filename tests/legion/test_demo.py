"""`legionctl demo` as a real subprocess: all 18 agents and the hosts stored; Ctrl-C stops all."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil
import pytest

from legion.cli.client import ApiClient
from legion.cli.config import load_config
from legion.demo.runner import status_line
from tests.conftest import Proc, free_port, wait_for

pytestmark = pytest.mark.timeout(180)


def demo_processes(directory: Path) -> list[psutil.Process]:
    """Processes whose command line names the demo directory."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(directory) in part for part in (p.info["cmdline"] or [])):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def test_demo_stores_all_agents_and_stops_cleanly(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    demo = Proc(["demo", "--dir", str(d), "--port", str(free_port()), "--workers", "1"],
                tmp_path / "demo.log")
    try:
        cfg_path = wait_for(lambda: (d / "monitoring_config.json").exists() and
                            (d / "admin.token").exists() and d / "monitoring_config.json",
                            timeout=60)
        time.sleep(0.5)
        cfg = load_config(cfg_path)
        client = ApiClient(cfg, (d / "admin.token").read_text().strip(), timeout=5)

        def agents_seen() -> set[str]:
            try:
                rows = client.get("/api/v1/query", metric="agent_tasks_total", since="2m")
            except Exception:  # noqa: BLE001 - not up yet
                return set()
            return {r["labels"]["agent_id"] for r in rows}

        agents = wait_for(lambda: len(agents_seen()) >= 18 and agents_seen(), timeout=90,
                          interval=2)
        assert len(agents) == 18
        hosts = {r["node"] for r in client.get(
            "/api/v1/query", metric="system_cpu_usage_percent", since="2m")}
        assert {"legion-hq", "gpu-node-1", "vps-eu-1"} <= hosts
        assert len(demo_processes(d)) >= 5  # aggregator, 3 agents, simulator (+ workers)
        # the demo scores raw points, so its hosts are scored within its first minutes (a
        # deployment's 5-minute maxima would take hours: runner.py)
        scored = wait_for(lambda: client.get("/api/v1/query", metric="legion_anomaly_score",
                                             since="5m"), timeout=120, interval=3)
        assert {r["labels"]["node"] for r in scored} <= hosts and scored
        text = (tmp_path / "demo.log").read_text()
        assert "#token=" in text and "dashboard" in text
    finally:
        returncode = demo.stop(40)  # SIGINT, as Ctrl-C
    assert returncode == 0, demo.output()[-2000:]
    left = wait_for(lambda: not demo_processes(d) or None, timeout=5) if demo_processes(d) \
        else True
    assert left and not demo_processes(d)
    assert "stopped: no demo process left running" in (tmp_path / "demo.log").read_text()


def test_status_line_rate_spans_the_aggregators_commit_gathering() -> None:
    # The status source is a stand-in for /api/v1/status and /api/v1/fleet (the real demo is
    # the test above): the aggregator commits every 3 s, the demo asks every 2 s.
    t = [0.0]

    def get(path: str) -> dict[str, Any]:
        if path == "/api/v1/status":
            return {"ingest": {"points_accepted": 300 * (t[0] // 3), "rejected_total": 0}}
        return {"summary": {"hosts": 3, "agents": 18}, "alerts": []}

    seen: deque[tuple[float, float]] = deque()
    rates = []
    for _ in range(30):
        line = status_line(get, seen, clock=lambda: t[0])
        rates.append(float(line.split("|")[0].split()[1]))
        t[0] += 2.0
    assert rates[0] == 0.0  # nothing to compare with yet
    assert all(80 <= r <= 120 for r in rates[6:]), rates  # 100 points/s, never a 0 between
    assert "hosts 3 | agents 18" in line and len(seen) <= 7
