"""CPU: busy percent in total and per core from cpu_times deltas, plus seconds per mode."""

from __future__ import annotations

from typing import Any

from legion.node_agent.collectors._base import Reading, add
from legion.node_agent.collectors.procfs import ProcSource
from legion.proto import Labels

# The kernel counts in jiffies (10 ms): a delta shorter than this per core is quantization noise.
MIN_DELTA_SECS = 0.05
_MODE_LABELS: dict[str, Labels] = {}  # one labels tuple per mode, built once


def _split(t: Any) -> tuple[float, float]:
    """(total, busy) seconds of one cpu_times reading."""
    # Linux counts guest time inside user/nice as well; adding it again would double count it.
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total, total - t.idle - getattr(t, "iowait", 0.0)


def _percent(before: tuple[float, float], after: tuple[float, float],
             cores: int = 1) -> float | None:
    """Busy percent between two readings; None when too little time passed or times went back."""
    d_total = after[0] - before[0]
    if d_total < MIN_DELTA_SECS * cores:
        return None
    # Single fields (iowait on NO_HZ kernels) may step back a little: clamp like psutil does.
    return min(100.0, max(0.0, 100.0 * (after[1] - before[1]) / d_total))


class CpuCollector:
    """`system_cpu_usage_percent` (total, and per core with label `cpu`) and
    `system_cpu_seconds_total{mode}`; percentages come from deltas between calls, never sleeps."""

    name = "cpu"

    def __init__(self, source: Any | None = None) -> None:
        """`source`: psutil or anything with its `cpu_times`; default /proc (`ProcSource`)."""
        self._owned = ProcSource() if source is None else None
        self._source: Any = source if source is not None else self._owned
        self._prev_total: tuple[float, float] | None = None
        self._prev_cores: list[tuple[float, float]] = []
        self._core_labels: list[Labels] = []
        self._prime()

    def _prime(self) -> None:
        # One reading at construction so the first collect() already has a delta.
        try:
            cores = [_split(c) for c in self._source.cpu_times(percpu=True)]
        except OSError:
            return  # collect() will raise it where the scheduler counts it
        self._prev_cores = cores
        self._prev_total = (sum(s[0] for s in cores), sum(s[1] for s in cores)) if cores else None

    def collect(self) -> list[Reading]:
        """Read /proc/stat once (per-core times) and derive every CPU metric from it."""
        cores = list(self._source.cpu_times(percpu=True))
        out: list[Reading] = []
        if not cores:
            return out
        prev_total, prev_cores = self._prev_total, self._prev_cores
        now = [_split(c) for c in cores]
        total = (sum(s[0] for s in now), sum(s[1] for s in now))
        # /proc/stat lists online CPUs only: when the count changes, indexes no longer match.
        if prev_total is not None and len(prev_cores) == len(now):
            add(out, "system_cpu_usage_percent", (), _percent(prev_total, total, len(now)))
            while len(self._core_labels) < len(now):
                self._core_labels.append((("cpu", str(len(self._core_labels))),))
            for labels, before, cur in zip(self._core_labels, prev_cores, now, strict=False):
                add(out, "system_cpu_usage_percent", labels, _percent(before, cur))
        for mode, secs in zip(cores[0]._fields, map(sum, zip(*cores, strict=True)), strict=True):
            labels = _MODE_LABELS.get(mode) or _MODE_LABELS.setdefault(mode, (("mode", mode),))
            add(out, "system_cpu_seconds_total", labels, secs)
        too_soon = (prev_total is not None and len(prev_cores) == len(now)
                    and 0 <= total[0] - prev_total[0] < MIN_DELTA_SECS * len(now))
        if not too_soon:  # too soon: keep the baseline so the next window is long enough
            self._prev_total, self._prev_cores = total, now
        return out

    def close(self) -> None:
        """Close the /proc files of the default source."""
        if self._owned is not None:
            self._owned.close()
