"""The aggregator's self-telemetry: counters shared by the ingest threads, one lock, one snapshot.

Names follow `legion_aggregator_<name>_<unit>[_total]`; `samples()` turns a snapshot into ordinary
samples so the aggregator's own health is stored and queried like any node's.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from legion.proto import Sample, canonical_labels


class IngestTelemetry:
    """Thread-safe ingest counters and gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_received = 0
        self.batches_accepted = 0
        self.points_accepted = 0
        self.batches_duplicate = 0
        self.rejected: Counter[str] = Counter()
        self.commits = 0
        self.commit_seconds_total = 0.0
        self.commit_seconds_last = 0.0
        self.commit_errors = 0
        self.checkpoints = 0
        self.checkpoint_retries = 0
        self.acks_sent = 0
        self.queue_depth = 0
        self.queue_full_waits = 0
        self.ingest_lag_seconds = 0.0
        self.socket_rebinds = 0
        self.handshake_failures: Counter[str] = Counter()
        self.agent_dropped: dict[str, int] = {}
        self.extra_samples: list[Any] = []  # callables ts_ms -> [Sample] (e.g. sink metrics)

    def add(self, **deltas: float) -> None:
        """Add to numeric counters by name."""
        with self._lock:
            for k, v in deltas.items():
                setattr(self, k, getattr(self, k) + v)

    def set(self, **values: float) -> None:
        """Set gauges by name."""
        with self._lock:
            for k, v in values.items():
                setattr(self, k, v)

    def reject(self, reason: str) -> None:
        """Count one rejected frame by reason."""
        with self._lock:
            self.rejected[reason] += 1

    def handshake_failed(self, reason: str) -> None:
        """Count one failed Curve/ZAP handshake by reason."""
        with self._lock:
            self.handshake_failures[reason] += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every counter, for `legionctl status` and the API."""
        with self._lock:
            return {
                "frames_received": self.frames_received,
                "batches_accepted": self.batches_accepted,
                "points_accepted": self.points_accepted,
                "batches_duplicate": self.batches_duplicate,
                "rejected": dict(self.rejected),
                "rejected_total": sum(self.rejected.values()),
                "commits": self.commits,
                "commit_errors": self.commit_errors,
                "commit_seconds_last": round(self.commit_seconds_last, 6),
                "commit_seconds_avg": round(self.commit_seconds_total / self.commits, 6)
                if self.commits else 0.0,
                "checkpoints": self.checkpoints,
                "checkpoint_retries": self.checkpoint_retries,
                "acks_sent": self.acks_sent,
                "queue_depth": self.queue_depth,
                "queue_full_waits": self.queue_full_waits,
                "ingest_lag_seconds": round(self.ingest_lag_seconds, 3),
                "socket_rebinds": self.socket_rebinds,
                "handshake_failures": dict(self.handshake_failures),
            }

    def samples(self, ts_ms: int) -> list[Sample]:
        """The snapshot as samples named `legion_aggregator_*`."""
        s = self.snapshot()
        out = [
            _s("legion_aggregator_frames_received_total", s["frames_received"], ts_ms),
            _s("legion_aggregator_batches_accepted_total", s["batches_accepted"], ts_ms),
            _s("legion_aggregator_points_accepted_total", s["points_accepted"], ts_ms),
            _s("legion_aggregator_batches_duplicate_total", s["batches_duplicate"], ts_ms),
            _s("legion_aggregator_commit_seconds", s["commit_seconds_last"], ts_ms),
            _s("legion_aggregator_commits_total", s["commits"], ts_ms),
            _s("legion_aggregator_queue_depth", s["queue_depth"], ts_ms),
            _s("legion_aggregator_ingest_lag_seconds", s["ingest_lag_seconds"], ts_ms),
            _s("legion_aggregator_acks_sent_total", s["acks_sent"], ts_ms),
            _s("legion_aggregator_commit_errors_total", s["commit_errors"], ts_ms),
            _s("legion_aggregator_checkpoints_total", s["checkpoints"], ts_ms),
            _s("legion_aggregator_checkpoint_retries_total", s["checkpoint_retries"], ts_ms),
            _s("legion_aggregator_queue_full_waits_total", s["queue_full_waits"], ts_ms),
            _s("legion_aggregator_socket_rebinds_total", s["socket_rebinds"], ts_ms),
        ]
        for reason, n in s["rejected"].items():
            out.append(_s("legion_aggregator_frames_rejected_total", n, ts_ms, reason=reason))
        for source in self.extra_samples:
            out.extend(source(ts_ms))
        for reason, n in s["handshake_failures"].items():
            out.append(_s("legion_aggregator_handshake_failures_total", n, ts_ms, reason=reason))
        return out


def _s(name: str, value: float, ts_ms: int, **labels: str) -> Sample:
    return Sample(name, canonical_labels(labels), float(value), ts_ms)
