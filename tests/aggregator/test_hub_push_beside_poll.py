"""The hub serves pushed batches beside its polls: a poll whose read is slow (a source or the
store's resync waiting behind a commit) holds no live update back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from legion.aggregator.gateway.hub import Hub
from legion.aggregator.store.types import IncomingBatch
from legion.cli.config import config_from_dict
from legion.proto import MetricsBatch, Sample


class Feed:
    """A live feed with one listener, published to from another thread (as the receiver)."""

    def __init__(self) -> None:
        self.listener: Callable[[IncomingBatch], None] | None = None

    def subscribe(self, listener: Callable[[IncomingBatch], None]) -> Callable[[], None]:
        self.listener = listener
        return lambda: None


class NoStore:
    def latest(self, metric_glob: str = "*", node: str | None = None) -> list[dict[str, Any]]:
        return []


class Client:
    def __init__(self) -> None:
        self.topics = {"system_health"}
        self.nodes: set[str] = set()

    def offer(self, topic: str, kind: str, data: dict[str, Any]) -> None:
        self.nodes |= {h["node"] for h in data.get("hosts", ())}


def test_a_push_is_served_while_a_poll_read_is_stuck() -> None:
    entered, release = threading.Event(), threading.Event()
    blocking = threading.Event()

    def alerts() -> list[dict[str, Any]]:  # a source read that waits (as behind a commit)
        if blocking.is_set():
            entered.set()
            release.wait(30)
        return []

    feed = Feed()
    hub = Hub(config_from_dict({"dashboard_config": {"update_interval_ms": 50}}), NoStore(),
              sources={"alerts": alerts}, live_feed=feed)
    client = Client()

    async def go() -> float | None:
        await hub.start()
        hub.clients.add(client)
        try:
            blocking.set()
            assert await asyncio.to_thread(entered.wait, 10)  # a poll is stuck in its read
            now = int(time.time() * 1000)
            batch = IncomingBatch("h1", 1, 1, MetricsBatch.from_samples(
                [Sample("system_cpu_usage_percent", (), 5.0, now)]), now)
            assert feed.listener is not None
            threading.Thread(target=feed.listener, args=(batch,)).start()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10:
                if "h1" in client.nodes:
                    return time.monotonic() - t0
                await asyncio.sleep(0.01)
            return None
        finally:
            release.set()
            await hub.stop()

    took = asyncio.run(go())
    assert took is not None, "the pushed batch waited for the stuck poll"  # released after
