"""A push's fleet is patched (only the pushed hosts' entries swapped in), and the patch is the
fleet a full assembly gives: the same hosts, summary and agents, and the same updates (plain
and delta) to WebSocket clients."""

from __future__ import annotations

import asyncio
import copy
import random
import time
from typing import Any

import pytest

from legion.aggregator.gateway import hub as hub_module
from legion.aggregator.gateway.fleet import FleetBuilder
from legion.aggregator.gateway.fleet_patch import host_index, patch_hosts
from legion.aggregator.gateway.hub import Hub
from legion.aggregator.store.types import IncomingBatch
from legion.cli.config import Config, config_from_dict
from legion.proto import MetricsBatch, Sample, canonical_labels

DISK = canonical_labels({"mount": "/"})


def system_rows(node: str, ts: int, rng: random.Random) -> list[dict[str, Any]]:
    """One tick of a host: health from cpu/memory/disk (values cross the thresholds), a
    labelled network counter (rates), a split-label series."""
    def row(metric: str, value: float, **labels: str) -> dict[str, Any]:
        return {"node": node, "metric": metric, "value": value, "ts_ms": ts, "labels": labels}
    return [row("system_cpu_usage_percent", rng.choice([5.0, 72.0, 85.0, 97.0])),
            row("system_memory_usage_percent", rng.uniform(10, 95)),
            row("system_disk_usage_percent", 50.0, mount="/"),
            row("system_network_received_bytes_total", float(ts // 10), interface="eth0"),
            row("system_cpu_time_seconds_total", float(ts // 100), type="user")]


def agent_rows(nodes: list[str], ts: int) -> list[dict[str, Any]]:
    return [{"node": n, "metric": "agent_response_time_ms", "value": 100.0 * (i + 1), "ts_ms": ts,
             "labels": {"agent_id": f"a{i}", "department": f"d{i % 2}", "quantile": "p95"}}
            for i, n in enumerate(nodes)]


def test_patch_is_the_full_assembly_with_only_the_changed_hosts() -> None:
    rng = random.Random(7)
    builder = FleetBuilder(Config())
    now = int(time.time() * 1000)
    nodes = [f"h{i:03d}" for i in range(40)]
    hosts = builder.host_entries([r for n in nodes for r in system_rows(n, now, rng)], now)
    agents = agent_rows(nodes[::5], now)  # every fifth host has an agent
    fleet = builder.assemble(hosts, agents, now)
    patched_some = 0
    for step in range(1, 60):  # within `stale_ms` of the agents' rows (polls age them)
        ts = now + 100 * step
        pushed = set(rng.sample(nodes, rng.choice([1, 3, 40])))
        fresh = builder.host_entries([r for n in sorted(pushed) for r in system_rows(n, ts, rng)],
                                     ts)
        hosts.update(fresh)
        kept = copy.deepcopy(fleet)
        patch = patch_hosts(fleet, host_index(fleet), hosts, pushed, ts)
        assert patch is not None
        assert fleet == kept  # the previous fleet is never mutated
        full = builder.assemble(hosts, agents, ts)
        assert patch.fleet == full
        before = {h["node"]: h for h in fleet["hosts"]}
        want = [h for h in full["hosts"] if h["node"] in pushed and h != before[h["node"]]]
        assert patch.changed == want  # in the fleet's order
        assert patch.before == [before[h["node"]] for h in want]
        patched_some += bool(patch.changed)
        fleet = patch.fleet
    assert patched_some > 40  # health and metrics really moved


def test_a_host_new_to_the_fleet_needs_a_full_assembly() -> None:
    rng = random.Random(1)
    builder = FleetBuilder(Config())
    now = int(time.time() * 1000)
    hosts = builder.host_entries(system_rows("h1", now, rng), now)
    fleet = builder.assemble(hosts, [], now)
    hosts.update(builder.host_entries(system_rows("h2", now, rng), now))
    assert patch_hosts(fleet, host_index(fleet), hosts, {"h2"}, now) is None
    assert patch_hosts(fleet, host_index(fleet), {}, {"h1"}, now) is None  # no entry for it


class Client:
    """A subscriber that records each update it is offered."""

    def __init__(self, delta: bool) -> None:
        self.topics = {"system_health", "agent_metrics"}
        self.delta_topics = set(self.topics) if delta else set()
        self.got: list[tuple[str, dict[str, Any]]] = []

    def offer(self, topic: str, kind: str, data: dict[str, Any]) -> None:
        self.got.append((topic, copy.deepcopy(data)))


class NoStore:
    def latest(self, metric_glob: str = "*", node: str | None = None) -> list[dict[str, Any]]:
        return []


def batch(node: str, seq: int, ts: int, cpu: float) -> IncomingBatch:
    return IncomingBatch(node, 1, seq, MetricsBatch.from_samples([
        Sample("system_cpu_usage_percent", (), cpu, ts),
        Sample("system_disk_usage_percent", DISK, 50.0, ts),
        Sample("agent_tasks_total", canonical_labels({"agent_id": f"a-{node}"}), float(seq), ts)
        if node == "h0" and seq % 7 == 0 else Sample("system_memory_usage_percent", (), 40.0, ts),
    ]), ts)


def run_pushes(patched: bool, now: int,
               monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[Any]]:
    """The updates a plain and a delta client get from one push sequence."""
    with monkeypatch.context() as m:
        if not patched:
            m.setattr(hub_module, "patch_hosts", lambda *args: None)
        hub = Hub(config_from_dict({}), NoStore())
        plain, delta = Client(False), Client(True)
        hub.clients |= {plain, delta}
        rng = random.Random(3)

        async def go() -> None:
            for seq in range(1, 40):
                for i in rng.sample(range(12), rng.choice([1, 4, 12])):
                    hub._live.push_batch(batch(f"h{i}", seq, now + seq * 1000 + i,
                                               rng.choice([3.0, 3.00001, 60.0, 95.0])))
                if seq == 20:  # a new host joins mid-way
                    hub._live.push_batch(batch("h99", seq, now + seq * 1000, 1.0))
                await hub._refresh(read_store=False, read_sources=False)
        asyncio.run(go())
    return plain.got, delta.got


def test_clients_get_the_same_updates_as_with_full_assembly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = int(time.time() * 1000)
    full_plain, full_delta = run_pushes(False, now, monkeypatch)
    plain, delta = run_pushes(True, now, monkeypatch)

    def hosts_only(got: list[Any]) -> list[Any]:  # wall-clock `ts` of agents aside
        return [(t, d) for t, d in got if t == "system_health"]
    assert len(hosts_only(full_plain)) > 30
    assert hosts_only(plain) == hosts_only(full_plain)
    assert hosts_only(delta) == hosts_only(full_delta)
    assert [t for t, _ in plain] == [t for t, _ in full_plain]
    assert any("hosts" in d and d.get("delta") for _, d in delta)
