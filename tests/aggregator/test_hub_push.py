"""Commits pushed from the store to the hub: what a notice holds, and that a WebSocket client
gets a committed point without waiting for the hub's poll."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from legion.aggregator.gateway import TokenStore, create_app, start_gateway, stop_gateway
from legion.aggregator.gateway.app import HUB_KEY
from legion.aggregator.gateway.live_rows import LiveRows
from legion.aggregator.store.commits import CommitNotice
from legion.aggregator.store.store import Store
from legion.aggregator.store.types import IncomingBatch
from legion.cli.config import config_from_dict
from legion.proto import MetricsBatch, Sample, canonical_labels


def batch(node: str, seq: int, samples: list[Sample]) -> IncomingBatch:
    return IncomingBatch(node, 1, seq, MetricsBatch.from_samples(samples), samples[0].ts_ms)


def test_notice_holds_the_newest_point_of_each_committed_series(tmp_path: Path) -> None:
    store = Store(tmp_path / "legion.duckdb")
    got: list[CommitNotice] = []
    unsubscribe = store.subscribe_commits(got.append)
    try:
        now = int(time.time() * 1000)
        disk = canonical_labels({"mount": "/"})
        store.write([
            batch("a", 1, [Sample("system_cpu_usage_percent", (), 1.0, now),
                           Sample("system_cpu_usage_percent", (), 2.0, now + 1000),
                           Sample("system_disk_usage_percent", disk, 50.0, now)]),
            batch("b", 1, [Sample("system_cpu_usage_percent", (), 7.0, now)])])
        assert len(got) == 1 and got[0].nodes == {"a", "b"}
        rows = {(r["node"], r["metric"]): r for r in got[0].rows}
        assert len(got[0].rows) == 3
        assert rows[("a", "system_cpu_usage_percent")]["value"] == 2.0  # newest of the two
        assert rows[("a", "system_cpu_usage_percent")]["ts_ms"] == now + 1000
        assert rows[("a", "system_disk_usage_percent")]["labels"] == {"mount": "/"}
        # the same rows as Store.latest() gives for those series
        latest = {(r["node"], r["metric"]): r for r in store.latest("system_*")}
        assert latest == rows

        store.write([batch("a", 1, [Sample("system_cpu_usage_percent", (), 9.0, now)])])
        assert len(got) == 1  # a duplicate batch commits nothing: no notice
        store.write([batch("a", 2, [Sample("system_cpu_usage_percent", (), 9.0, now - 5000),
                                    Sample("system_memory_usage_percent", (), 3.0, now)])])
        assert len(got) == 2  # a late point is stored but is not the newest: not in the notice
        assert [(r["metric"], r["value"]) for r in got[1].rows] == \
            [("system_memory_usage_percent", 3.0)]

        unsubscribe()
        store.write([batch("a", 3, [Sample("system_cpu_usage_percent", (), 4.0, now + 2000)])])
        assert len(got) == 2
    finally:
        store.close()


def test_a_failing_listener_never_fails_the_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "legion.duckdb")

    def broken(_: CommitNotice) -> None:
        raise RuntimeError("listener bug")

    store.subscribe_commits(broken)
    try:
        now = int(time.time() * 1000)
        result = store.write([batch("a", 1, [Sample("system_cpu_usage_percent", (), 1.0, now)])])
        assert result.stored == (("a", 1, 1),)
        assert store.commits.errors == 1
        assert store.latest("system_*")[0]["value"] == 1.0
    finally:
        store.close()


def test_a_commit_reaches_the_websocket_before_the_next_poll(tmp_path: Path) -> None:
    """The hub polls every 10 minutes here: only the pushed commit can deliver the update."""
    config = config_from_dict({"security": {"enable_tls": False},
                               "dashboard_config": {"update_interval_ms": 600_000}},
                              base_dir=tmp_path).aggregator_settings()
    store = Store(tmp_path / "legion.duckdb")
    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.add("viewer", "viewer")
    now = int(time.time() * 1000)
    store.write([batch("web-1", 1, [Sample("system_cpu_usage_percent", (), 20.0, now)])])

    async def scenario() -> None:
        app = create_app(config, store, lambda: {"accepted": 0}, tokens)
        server: Any = await start_gateway(app, config, port=0)
        hub = app[HUB_KEY]
        try:
            async with aiohttp.ClientSession() as s, \
                    s.ws_connect(f"{server.url}/ws?token={token}") as ws:
                await ws.send_json({"op": "subscribe", "topics": ["system_health"]})
                deadline = asyncio.get_running_loop().time() + 30
                snap = await _receive(ws, deadline, lambda m: m.get("type") == "snapshot")
                assert snap["data"]["hosts"][0]["metrics"]["cpu_usage_percent"] == 20.0
                polls = hub.status()["ticks"]  # the next poll is 10 minutes away

                await asyncio.to_thread(store.write, [batch("web-1", 2, [
                    Sample("system_cpu_usage_percent", (), 93.0, now + 1000)])])
                upd = await _receive(ws, deadline, lambda m: m.get("type") == "update")
                host = upd["data"]["hosts"][0]
                assert host["metrics"]["cpu_usage_percent"] == 93.0
                assert host["ts_ms"] == now + 1000
                assert hub.status()["ticks"] == polls and hub.status()["pushes"] >= 1
        finally:
            await stop_gateway(server)
        assert not store.commits  # the hub unsubscribed when it stopped

    try:
        asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        store.close()


async def _receive(ws: aiohttp.ClientWebSocketResponse, deadline: float,
                   pred: Any) -> dict[str, Any]:
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, "timed out waiting for a message"
        msg: dict[str, Any] = await ws.receive_json(timeout=left)
        if pred(msg):
            return msg


def test_live_rows_keep_the_newest_point_whatever_the_order() -> None:
    def row(ts: int, v: float, node: str = "a") -> dict[str, Any]:
        return {"ts_ms": ts, "node": node, "metric": "system_x", "labels": {"k": "1"},
                "value": v}

    live = LiveRows()
    live.push((row(2, 2.0),))
    live.push((row(1, 1.0), row(1, 5.0, node="b")))  # an older commit folded in later
    live.drain()
    assert sorted((r["node"], r["value"]) for r in live.values()) == [("a", 2.0), ("b", 5.0)]
    # a store read that began before the newest commit: the pushed row stays, others come in
    live.replace([row(1, 1.0), row(3, 7.0, node="c")], keep_newer=True)
    assert sorted((r["node"], r["value"]) for r in live.values()) == \
        [("a", 2.0), ("b", 5.0), ("c", 7.0)]
    live.replace([row(1, 1.0)], keep_newer=False)  # polled only: the read is the whole truth
    assert [r["value"] for r in live.values()] == [1.0]
