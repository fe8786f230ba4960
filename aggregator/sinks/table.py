"""The `Sink` seam: one protocol, one `SINKS` table, and `SinkSet`, the fan-out ingest writes to.

Ack contract (README "Scale-out"): a batch is *committed* to an agent once the DuckDB store has
committed it and every remote sink has **queued it on disk** (one unbuffered write per shard:
it survives kill -9); *checkpointed* (the agent may free it) once the store has checkpointed and
every sink queue has been fsynced. Agents do not wait for the remote store itself: a remote store
that is down for an hour then costs the aggregator's disk (bounded, drop-oldest counted), not the
agents' spools, and ack latency does not depend on a remote round trip.

Exactly-once stays with the DuckDB store: only batches it does not hold yet are forwarded, so an
agent's resend of an already-committed batch is not queued again. Remote delivery is
at-least-once: a crash between queueing and the store's commit, or a request whose answer was
lost, sends identical samples again, which Prometheus ignores and VictoriaMetrics drops with
`-dedup.minScrapeInterval=1ms`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from legion.aggregator.config import AggregatorSettings
from legion.aggregator.sinks.config import RemoteWriteConfig
from legion.aggregator.store import IncomingBatch, Store, WriteResult
from legion.proto import Sample, canonical_labels

log = logging.getLogger("legion.aggregator.sinks")


class Sink(Protocol):
    """A destination for committed batches."""

    name: str
    kind: str

    def write(self, batches: Sequence[IncomingBatch]) -> WriteResult:
        """Accept the batches durably (or raise): stored and duplicate keys."""
        ...

    def sync(self) -> None:
        """Make everything accepted so far survive a power loss."""
        ...

    def start(self) -> None:
        """Start background work (idempotent)."""
        ...

    def stop(self, timeout: float = 5.0) -> None:
        """Stop background work; safe before `start`."""
        ...

    def stats(self) -> dict[str, Any]:
        """Self-metrics (numbers, or dicts of numbers by reason)."""
        ...


class StoreSink:
    """The default sink: the DuckDB `Store`, which decides what is new (exactly-once)."""

    kind = "duckdb"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name = "duckdb"

    def write(self, batches: Sequence[IncomingBatch]) -> WriteResult:
        """Store the batches in one transaction."""
        return self.store.write(batches)

    def sync(self) -> None:
        """Checkpoint DuckDB."""
        self.store.checkpoint()

    def start(self) -> None:
        """Nothing runs in the background."""

    def stop(self, timeout: float = 5.0) -> None:
        """The aggregator closes the store itself."""

    def stats(self) -> dict[str, Any]:
        """Nothing beyond the ingest counters."""
        return {}


def _remote_write(config: AggregatorSettings, cfg: RemoteWriteConfig) -> Sink:
    # Imported only when a remote sink is configured: its snappy codec and durable queue cost
    # an aggregator without one ~2.4 MiB RSS (issue 17).
    from legion.aggregator.sinks.remote_write import RemoteWriteSink, auth_header

    ca = Path(cfg.tls_ca_path) if cfg.tls_ca_path else None
    return RemoteWriteSink(cfg, queue_dir_of(config, cfg), ca_path=ca,
                           auth_header=auth_header(cfg, lambda p: Path(p).read_text()))


SINKS: dict[str, Callable[[AggregatorSettings, Any], Sink]] = {
    "remote_write": _remote_write,
}
"""Configured sink kinds: `sinks.<kind>` is a list of per-sink configs (the store is implicit)."""


class SinkSet:
    """What the ingest writer writes to: the store first, then every configured sink.

    It stands where the writer used to hold the `Store`: `write` and `checkpoint` fan out, and any
    other attribute is the store's (the writer's other store calls are unchanged).
    """

    def __init__(self, store: Store, sinks: Sequence[Sink] = ()) -> None:
        self.primary = StoreSink(store)
        self.sinks = list(sinks)

    def write(self, batches: Sequence[IncomingBatch]) -> WriteResult:
        """Queue what is new on every sink, then store; raise (nothing stored) if a sink fails.

        Queue first: a crash between the two steps leaves a batch queued but not stored, so the
        agent resends it and it is queued again (an identical sample twice, which remote stores
        drop); the other order would lose it for the remote store (stored, so never re-queued).
        """
        if self.sinks:
            new = self._new(batches)
            if new:
                for sink in self.sinks:
                    sink.write(new)
        return self.primary.write(batches)

    def _new(self, batches: Sequence[IncomingBatch]) -> list[IncomingBatch]:
        """Batches the store does not hold yet, each once (a group may hold a send and a resend)."""
        ranges: dict[tuple[str, int], list[tuple[int, int]]] = {}
        seen: set[tuple[str, int, int]] = set()
        out = []
        for b in batches:
            if b.key in seen:
                continue
            seen.add(b.key)
            have = ranges.get((b.node, b.epoch))
            if have is None:
                have = ranges[(b.node, b.epoch)] = self.primary.store.stored_ranges(b.node,
                                                                                    b.epoch)
            if not any(lo <= b.seq <= hi for lo, hi in have):
                out.append(b)
        return out

    def checkpoint(self) -> None:
        """Checkpoint the store and fsync every sink queue."""
        self.primary.sync()
        for sink in self.sinks:
            sink.sync()

    def start(self) -> None:
        """Start every sink's senders."""
        for sink in self.sinks:
            sink.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every sink (queues stay on disk)."""
        for sink in self.sinks:
            sink.stop(timeout)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per sink name: its stats."""
        return {s.name: s.stats() for s in self.sinks}

    def samples(self, ts_ms: int) -> list[Sample]:
        """Sink self-metrics as `legion_aggregator_sink_*{sink=...}` samples."""
        out = []
        for name, st in self.status().items():
            for key, v in st.items():
                if isinstance(v, dict):
                    metric = f"legion_aggregator_sink_{key}_samples_total"
                    out += [Sample(metric, canonical_labels({"sink": name, "reason": r}),
                                   float(n), ts_ms) for r, n in v.items()]
                else:
                    out.append(Sample(f"legion_aggregator_sink_{key}",
                                      canonical_labels({"sink": name}), float(v), ts_ms))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.primary.store, name)


def build_sinks(config: AggregatorSettings, store: Store) -> SinkSet:
    """The store plus one sink per entry of every `sinks.<kind>` list."""
    sinks: list[Sink] = []
    for kind, make in SINKS.items():
        for cfg in getattr(config.sinks, kind):
            sinks.append(make(config, cfg))
    return SinkSet(store, sinks)


def queue_dir_of(config: AggregatorSettings, cfg: RemoteWriteConfig) -> Path:
    """Where a remote-write sink keeps its queue: `queue_path`, else `sinks/<name>` beside the
    DuckDB file (the aggregator's writable state directory)."""
    if cfg.queue_path:
        return Path(cfg.queue_path)
    return Path(config.storage.db_path).parent / "sinks" / cfg.name
