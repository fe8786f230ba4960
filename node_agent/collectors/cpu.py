"""CPU: busy percent in total and per core from cpu_times deltas, plus seconds per mode."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import psutil

from legion.node_agent.collectors._base import Reading, add
from legion.proto import Labels

# Linux counts guest time inside user/nice as well; adding it again would double count it.
_NOT_IN_TOTAL = frozenset({"guest", "guest_nice"})
_IDLE = frozenset({"idle", "iowait"})
# The kernel counts in jiffies (10 ms): a delta shorter than this per core is quantization noise.
MIN_DELTA_SECS = 0.05


def _split(t: Any) -> tuple[float, float]:
    """(total, busy) seconds of one cpu_times reading."""
    fields = t._asdict()
    total = sum(v for k, v in fields.items() if k not in _NOT_IN_TOTAL)
    idle = sum(v for k, v in fields.items() if k in _IDLE)
    return total, total - idle


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

    def __init__(self, source: ModuleType | Any = psutil) -> None:
        self._source = source
        self._prev_total: tuple[float, float] | None = None
        self._prev_cores: list[tuple[float, float]] = []
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
            for i, (before, cur) in enumerate(zip(prev_cores, now, strict=True)):
                add(out, "system_cpu_usage_percent", (("cpu", str(i)),), _percent(before, cur))
        modes: dict[str, float] = {}
        for c in cores:
            for k, v in c._asdict().items():
                modes[k] = modes.get(k, 0.0) + v
        for mode, secs in modes.items():
            labels: Labels = (("mode", mode),)
            add(out, "system_cpu_seconds_total", labels, secs)
        too_soon = (prev_total is not None and len(prev_cores) == len(now)
                    and 0 <= total[0] - prev_total[0] < MIN_DELTA_SECS * len(now))
        if not too_soon:  # too soon: keep the baseline so the next window is long enough
            self._prev_total, self._prev_cores = total, now
        return out
