"""A hub nobody watches only folds pushed batches in (issue 17: the idle aggregator's event
loop): no fleet rebuild per tick, yet a late client's chart history holds every batch, the same
as a watched hub's, and the first reader of the fleet gets a current one."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from legion.aggregator.gateway import hub as hub_mod
from legion.aggregator.gateway.hub import Hub
from legion.aggregator.live_feed import LiveFeed
from legion.aggregator.store import IncomingBatch, Store
from legion.cli.config import config_from_dict
from legion.proto import MetricsBatch, Sample, canonical_labels

BATCHES = 6


class Client:
    """A subscriber that keeps the hub watched."""

    topics = {"system_health", "agent_metrics"}

    def offer(self, topic: str, kind: str, data: dict[str, Any]) -> None:
        pass


def agent_batch(seq: int, ts: int) -> IncomingBatch:
    """One tick of a host with one AI agent: chart series, a folded one, counters, and
    series no chart uses."""
    agent = canonical_labels({"agent_id": "planner-1", "department": "ops"})
    samples = [
        Sample("system_cpu_usage_percent", (), 10.0 + seq, ts),
        Sample("system_memory_usage_percent", (), 40.0, ts),
        Sample("system_disk_usage_percent", canonical_labels({"mount": "/"}), 50.0 + seq, ts),
        Sample("system_disk_usage_percent", canonical_labels({"mount": "/var"}), 20.0, ts),
        Sample("system_network_received_bytes_total", canonical_labels({"interface": "eth0"}),
               1000.0 * seq, ts),
        Sample("system_load1", (), 0.5, ts),
        Sample("agent_tokens_total", agent, 500.0 * seq, ts),
        Sample("agent_success_rate_percent", agent, 99.0, ts),
        Sample("legion_agent_batches_sent_total", (), float(seq), ts),
    ]
    return IncomingBatch("web-1", 1, seq, MetricsBatch.from_samples(samples), ts)


def test_an_unwatched_hub_records_the_same_history_without_rebuilding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_mod, "UNWATCHED_TICK_S", 0.05)  # as often as watched, here
    config = config_from_dict({"dashboard_config": {"update_interval_ms": 50}})
    store = Store(tmp_path / "legion.duckdb")
    feeds = {"watched": LiveFeed(), "unwatched": LiveFeed()}
    hubs = {name: Hub(config, store, live_feed=feed) for name, feed in feeds.items()}

    async def until(cond: Any, what: str) -> None:
        deadline = time.monotonic() + 30
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def go() -> None:
        for hub in hubs.values():
            await hub.start()
        hubs["watched"].clients.add(Client())
        try:
            t0 = int(time.time() * 1000) - 60_000
            for seq in range(1, BATCHES + 1):
                b = agent_batch(seq, t0 + 1000 * seq)
                for feed in feeds.values():  # published from another thread, as ingest does
                    threading.Thread(target=feed.publish, args=(b,)).start()
                await until(lambda: all(not h._live._pushed for h in hubs.values()),  # noqa: SLF001
                            "both hubs to fold the batch in")
            idle = hubs["unwatched"]
            await until(lambda: idle.stats["unwatched_ticks"] > BATCHES, "unwatched ticks")
            assert idle.stats["ticks"] == 1  # the first tick's, then no rebuild, diff or read
            assert hubs["watched"].stats["ticks"] > 0 and hubs["watched"].stats["pushes"] > 0

            for topic in ("system_health", "agent_metrics"):
                want = hubs["watched"].snapshot(topic)["history"]
                assert idle.snapshot(topic)["history"] == want
            cpu = idle.snapshot("system_health")["history"]["web-1"]
            assert [v for _, v in cpu["cpu_usage_percent"]] == [10.0 + s for s in
                                                                 range(1, BATCHES + 1)]
            assert [v for _, v in cpu["disk_usage_percent"]] == [50.0 + s for s in
                                                                  range(1, BATCHES + 1)]
            agent = idle.snapshot("agent_metrics")["history"]["planner-1"]
            assert [v for _, v in agent["tokens_per_s"]] == [500.0] * (BATCHES - 1)

            # The first reader finds no fleet, refreshes, and gets the newest batch.
            assert idle.fleet is None
            fleet = await idle.refresh()
            host = fleet["hosts"][0]
            assert host["node"] == "web-1"
            assert host["metrics"]["cpu_usage_percent"] == 10.0 + BATCHES
            assert idle.watched  # read just now: full ticks again
            ticks = idle.stats["ticks"]
            await until(lambda: idle.stats["ticks"] > ticks + 2, "watched ticks")
            assert idle.fleet is not None
        finally:
            for hub in hubs.values():
                await hub.stop()

    try:
        asyncio.run(asyncio.wait_for(go(), 120))
    finally:
        store.close()


def test_the_first_reader_after_an_unwatched_stretch_keeps_every_batch_in_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches still queued when a reader comes (the unwatched tick is far away) get a chart
    point each, not one for all of them."""
    monkeypatch.setattr(hub_mod, "UNWATCHED_TICK_S", 600.0)
    config = config_from_dict({"dashboard_config": {"update_interval_ms": 50}})
    store = Store(tmp_path / "legion.duckdb")
    feed = LiveFeed()
    hub = Hub(config, store, live_feed=feed)

    async def go() -> None:
        await hub.start()
        try:
            deadline = time.monotonic() + 30
            while hub.stats["unwatched_ticks"] < 1:  # then it sleeps for 10 minutes
                assert time.monotonic() < deadline, "no unwatched tick"
                await asyncio.sleep(0.02)
            t0 = int(time.time() * 1000) - 60_000
            for seq in (1, 2, 3):
                sender = threading.Thread(target=feed.publish,
                                          args=(agent_batch(seq, t0 + 1000 * seq),))
                sender.start()
                sender.join(30)
            assert len(hub._live._pushed) == 3  # noqa: SLF001 - all three still queued
            assert hub.fleet is None
            fleet = await hub.refresh()
            assert fleet["hosts"][0]["metrics"]["cpu_usage_percent"] == 13.0
            cpu = hub.snapshot("system_health")["history"]["web-1"]["cpu_usage_percent"]
            assert [v for _, v in cpu] == [11.0, 12.0, 13.0]
        finally:
            await hub.stop()

    try:
        asyncio.run(asyncio.wait_for(go(), 120))
    finally:
        store.close()
