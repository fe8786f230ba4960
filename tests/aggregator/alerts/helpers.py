"""Shared pieces for the alerting tests: a real Store file, batches, an engine on a fake clock."""

from __future__ import annotations

from typing import Any

from legion.aggregator.alerts.engine import AlertEngine
from legion.aggregator.store import IncomingBatch, Store
from legion.cli.config import config_from_dict
from legion.proto import MetricsBatch, Sample, canonical_labels

T0 = 1_800_000_000_000


class Clock:
    """An injectable ms clock."""

    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t

    def advance(self, secs: float) -> int:
        self.t += int(secs * 1000)
        return self.t


class Feed:
    """Writes samples into a real Store as node batches with increasing seqs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seq: dict[str, int] = {}

    def put(self, node: str, ts_ms: int, *points: tuple[str, dict[str, str], float]) -> None:
        self.seq[node] = self.seq.get(node, 0) + 1
        samples = [Sample(n, canonical_labels(lb), float(v), ts_ms) for n, lb, v in points]
        self.store.write([IncomingBatch(node, 1, self.seq[node],
                                        MetricsBatch.from_samples(samples), ts_ms)])


def make_engine(tmp_path: Any, alerting: dict[str, Any], clock: Clock, store: Store | None = None,
                analytics: dict[str, Any] | None = None, **kw: Any) -> tuple[AlertEngine, Store]:
    cfg = config_from_dict({"collection_interval": 1.0, "alerting": alerting,
                            "analytics": analytics or {}}, base_dir=tmp_path)
    store = store or Store(tmp_path / "legion.duckdb")
    return AlertEngine(cfg.aggregator_settings(), store, clock_ms=clock, **kw), store
