"""The live stream publishes a batch when ingest accepts it, once, and never a rejected one.

Real: the aggregator's ingest threads and DuckDB file, Curve peers on loopback (tests/aggregator/
curve_peer.py), the gateway and a WebSocket client. The failed write is DuckDB's own: just
before the writer's transaction a second one commits a `series` row with the id the writer is
about to insert (the wrapper only times that interleaving, as in test_store_commit_failure.py),
then removes it, so the agent's resend commits.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import zmq

from legion.aggregator.gateway import TokenStore, create_app
from legion.aggregator.gateway.keys import GATEWAY_STATUS_KEY
from legion.aggregator.gateway.telemetry import samples as gateway_samples
from legion.aggregator.live_feed import LiveFeed
from legion.aggregator.service import Aggregator
from legion.aggregator.store.schema import DB_ALIAS
from legion.aggregator.store.types import IncomingBatch
from legion.cli.config import load_config
from legion.cli.setup_cmds import add_agent_key
from legion.proto import ACK_COMMITTED, ACK_REJECTED, MetricsBatch, Sample
from tests.aggregator.curve_peer import CurvePeer, series_batch
from tests.conftest import gateway_thread, make_setup, wait_for


class FailsOnce:
    """Makes the store writer's next write that adds a series fail with DuckDB's own error:
    just before it, a second transaction commits a `series` row with the id the writer is about
    to insert (the wrapper only times that interleaving), and removes it after the failure."""

    def __init__(self, writer: Any) -> None:
        self.writer, self.failed = writer, 0
        self._transaction = writer._transaction
        writer._transaction = self.transaction

    def transaction(self, *args: Any) -> None:
        if self.failed or not args[1]:  # args[1]: the new series of this write
            return self._transaction(*args)
        other = self.writer._con.cursor()
        other.execute(f"USE {DB_ALIAS}")
        other.execute("INSERT INTO series SELECT coalesce(max(id), 0) + 1, 'other', 'm', '[]', "
                      "MAP {}, 0 FROM series")
        try:
            self._transaction(*args)
        except duckdb.Error:
            self.failed += 1
            raise
        finally:
            other.execute("DELETE FROM series WHERE node = 'other'")
            other.close()


class WsCollector(threading.Thread):
    """A WebSocket client subscribed to `system_health` that keeps every message."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.messages: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._collect())

    async def _collect(self) -> None:
        async with aiohttp.ClientSession() as s, \
                s.ws_connect(f"{self.url}/ws?token={self.token}") as ws:
            await ws.send_json({"op": "subscribe", "topics": ["system_health"],
                                "history": False})
            while not self.stop.is_set():
                try:
                    msg = await ws.receive(timeout=0.2)
                except TimeoutError:
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                body = json.loads(msg.data)
                self.messages.append(body)
                if body.get("type") == "snapshot":
                    self.subscribed.set()

    def host_points(self, node: str) -> list[int]:
        """The ts_ms of `node` in every snapshot and update received, in order; updates that
        only say the host went stale (10 s without data: they repeat its last ts) left out."""
        return [h["ts_ms"] for m in self.messages if m.get("topic") == "system_health"
                for h in m["data"].get("hosts", ()) if h["node"] == node
                and h.get("health") != "stale"]


def _send_until_acked(peer: CurvePeer, seq: int, batch: MetricsBatch, level: str) -> None:
    """What an agent does: send, and resend until the batch is acked at `level`."""
    deadline = time.monotonic() + 60
    while seq not in peer.acks[level]:
        assert time.monotonic() < deadline, f"{peer.node} seq {seq}: no {level} ack"
        peer.send(seq, batch)
        peer.pump(1000)


def test_a_batch_streams_once_across_a_failed_commit_and_a_rejected_one_never(
        tmp_path: Path) -> None:
    cfg_path = make_setup(tmp_path / "legion", security={"enable_tls": False},
                          aggregator={"max_series_per_node": 5},
                          dashboard_config={"update_interval_ms": 200})
    cfg = load_config(cfg_path)
    for node in ("web-1", "big"):
        add_agent_key(cfg, node)
    settings = cfg.aggregator_settings()
    agg = Aggregator(settings)
    agg.start()
    ctx = zmq.Context()
    tokens = TokenStore(Path(settings.aggregator.tokens_path))
    token = tokens.add("viewer-live", "viewer")
    try:
        web, big = CurvePeer(ctx, cfg, "web-1"), CurvePeer(ctx, cfg, "big")
        web.connect()
        big.connect()
        assert isinstance(agg.live_feed, LiveFeed)
        apps: list[Any] = []

        def make_app() -> Any:
            apps.append(create_app(settings, agg.store, agg.status, tokens,
                                   live_feed=agg.live_feed))
            return apps[0]

        with gateway_thread(settings, make_app) as server:
            client = WsCollector(server.url, token)
            client.start()
            try:
                assert client.subscribed.wait(30)
                failing = FailsOnce(agg.store._writer)
                now = int(time.time() * 1000)
                first = MetricsBatch.from_samples([
                    Sample("system_cpu_usage_percent", (), 42.0, now)])
                web.send(2, first)
                # On the stream before it is durable: its one commit failed, nothing acked.
                wait_for(lambda: now in client.host_points("web-1"), 30)
                wait_for(lambda: failing.failed == 1, 30)
                web.pump(300)
                assert 2 not in web.acks[ACK_COMMITTED]
                assert agg.telemetry.snapshot()["commit_errors"] >= 1
                _send_until_acked(web, 2, first, ACK_COMMITTED)  # the agent's resend commits

                # 10 new series for a node allowed 5: rejected whole, acked `rejected`.
                _send_until_acked(big, 2, series_batch("system_cpu_usage_percent", 0, 10),
                                  ACK_REJECTED)
                later = MetricsBatch.from_samples([
                    Sample("system_cpu_usage_percent", (), 7.0, now + 1000)])
                _send_until_acked(web, 3, later, ACK_COMMITTED)
                wait_for(lambda: now + 1000 in client.host_points("web-1"), 30)
            finally:
                client.stop.set()
                client.join(15)
        assert client.host_points("web-1") == [now, now + 1000]  # each batch exactly once
        assert client.host_points("big") == []  # the rejected batch never streamed
        assert agg.live_feed.stats["duplicates"] >= 1  # the resend reached the feed, held
        counted = {labels["result"]: v for name, labels, v, _ in
                   gateway_samples(apps[0][GATEWAY_STATUS_KEY]())
                   if name == "legion_gateway_live_batches_total"}
        assert counted["duplicate"] == agg.live_feed.stats["duplicates"]  # on /metrics too
        assert counted["published"] >= 2
        stored = agg.store.query("system_cpu_usage_percent", node="web-1",
                                 since_ms=now - 1, until_ms=now + 2000)
        assert [r["value"] for r in stored] == [42.0, 7.0]  # stored once each
    finally:
        agg.stop()
        ctx.destroy(linger=0)


def test_the_feed_passes_each_seq_on_once_per_node_and_epoch() -> None:
    feed = LiveFeed()
    got: list[tuple[str, int, int]] = []
    batch = MetricsBatch.from_samples([Sample("system_x", (), 1.0, 1)])

    def item(node: str, epoch: int, seq: int) -> IncomingBatch:
        return IncomingBatch(node, epoch, seq, batch, 1)

    assert not feed.publish(item("a", 1, 1))  # no listener: nothing kept
    unsubscribe = feed.subscribe(lambda b: got.append(b.key))
    sent = [("a", 1, 1), ("a", 1, 2), ("a", 1, 1), ("b", 1, 1), ("a", 1, 2), ("a", 2, 1),
            ("a", 3, 1), ("a", 2, 1)]
    assert [feed.publish(item(*k)) for k in sent] == [True, True, False, True, False, True,
                                                      True, False]
    assert got == [("a", 1, 1), ("a", 1, 2), ("b", 1, 1), ("a", 2, 1), ("a", 3, 1)]
    assert feed.stats == {"published": 5, "duplicates": 3, "listener_errors": 0}
    unsubscribe()
    assert not feed.publish(item("a", 9, 1)) and len(got) == 5


def test_an_update_is_encoded_once_for_every_client(tmp_path: Path) -> None:
    """Two clients of one update get the same data, JSON-encoded once by the hub."""
    from legion.aggregator.gateway import start_gateway, stop_gateway
    from legion.aggregator.gateway.app import HUB_KEY
    from legion.aggregator.store.store import Store
    from legion.cli.config import config_from_dict

    config = config_from_dict({"security": {"enable_tls": False},
                               "dashboard_config": {"update_interval_ms": 600_000}},
                              base_dir=tmp_path).aggregator_settings()
    store = Store(tmp_path / "legion.duckdb")
    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.add("viewer", "viewer")
    now = int(time.time() * 1000)

    def write(seq: int, value: float, ts: int) -> None:
        store.write([IncomingBatch("web-1", 1, seq, MetricsBatch.from_samples(
            [Sample("system_cpu_usage_percent", (), value, ts)]), ts)])

    write(1, 20.0, now)

    async def scenario() -> tuple[list[str], int]:
        app = create_app(config, store, dict, tokens)
        server: Any = await start_gateway(app, config, port=0)
        hub = app[HUB_KEY]
        try:
            async with aiohttp.ClientSession() as s, \
                    s.ws_connect(f"{server.url}/ws?token={token}") as a, \
                    s.ws_connect(f"{server.url}/ws?token={token}") as b:
                for ws in (a, b):
                    await ws.send_json({"op": "subscribe", "topics": ["system_health"],
                                        "history": False})
                    while (await ws.receive_json(timeout=30)).get("type") != "snapshot":
                        pass
                before = hub.status()["encoded"]
                await asyncio.to_thread(write, 2, 93.0, now + 1000)
                got = []
                for ws in (a, b):
                    while (m := await ws.receive_json(timeout=30)).get("type") != "update":
                        pass
                    got.append(json.dumps(m["data"], sort_keys=True))
                return got, hub.status()["encoded"] - before
        finally:
            await stop_gateway(server)

    try:
        got, encoded = asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        store.close()
    assert got[0] == got[1] and '"cpu_usage_percent": 93.0' in got[0]
    assert encoded == 1  # one encoding, two clients
