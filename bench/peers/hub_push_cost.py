"""CPU of one hub push (a rebuild on pushed batches) against fleet size and batches per push.

Builds a `Hub` over a fleet of `--hosts` hosts (three system series each, as the latency bench
sends), one subscribed client taking every update as it comes, then times (thread CPU) pushes of
1, 10 and all hosts' new batches. No sockets, no store: only the hub's own work, on one thread.
Run as `python bench/peers/hub_push_cost.py --hosts 200`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from legion.aggregator.gateway.hub import Hub
from legion.aggregator.store.types import IncomingBatch
from legion.cli.config import config_from_dict
from legion.proto import MetricsBatch, Sample, canonical_labels

DISK = canonical_labels({"mount": "/"})


class Client:
    """A subscriber that takes each update at once (its pending message is written at once)."""

    def __init__(self) -> None:
        self.topics = {"system_health"}
        self.delta_topics: set[str] = set()
        self.updates = 0

    def offer(self, topic: str, kind: str, data: dict[str, Any]) -> None:
        self.updates += 1


class NoStore:
    def latest(self, metric_glob: str = "*", node: str | None = None) -> list[dict[str, Any]]:
        return []


def batch(node: str, seq: int, now: int, cpu: float) -> IncomingBatch:
    samples = [Sample("system_cpu_usage_percent", (), cpu, now),
               Sample("system_memory_usage_percent", (), 40.0, now),
               Sample("system_disk_usage_percent", DISK, 50.0, now)]
    return IncomingBatch(node, 1, seq, MetricsBatch.from_samples(samples), now)


async def measure(hosts: int, per_push: int, pushes: int, delta: bool) -> dict[str, float]:
    hub = Hub(config_from_dict({}), NoStore())
    client = Client()
    if delta:
        client.delta_topics.add("system_health")
    hub.clients.add(client)
    nodes = [f"h{i:04d}" for i in range(hosts)]
    now = int(time.time() * 1000)
    for n in nodes:  # the whole fleet, once
        hub._live.push_batch(batch(n, 1, now, 1.0))
    await hub._refresh(read_store=False, read_sources=False)
    cpu: list[float] = []
    seq, at = 1, 0
    for p in range(pushes):
        seq += 1
        for _ in range(per_push):
            hub._live.push_batch(batch(nodes[at % hosts], seq, now + 1000 * p + 1, float(p % 97)))
            at += 1
        c0 = time.thread_time()
        await hub._refresh(read_store=False, read_sources=False)
        cpu.append((time.thread_time() - c0) * 1e6)
    return {"hosts": hosts, "batches_per_push": per_push, "delta": delta,
            "cpu_us_median": round(statistics.median(cpu), 1),
            "cpu_us_per_batch": round(statistics.median(cpu) / per_push, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--pushes", type=int, default=200)
    args = ap.parse_args()
    for hosts in args.hosts:
        for per_push in (1, 10, hosts):
            for delta in (False, True):
                print(json.dumps(asyncio.run(measure(hosts, per_push, args.pushes, delta))))


if __name__ == "__main__":
    main()
