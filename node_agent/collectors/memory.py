"""Memory and swap: usage percent and bytes (used, available, total, ...)."""

from __future__ import annotations

from typing import Any

from legion.node_agent.collectors._base import Reading, add
from legion.node_agent.collectors.procfs import ProcSource

# (metric, field of virtual_memory()); fields absent on a platform are simply omitted.
_MEMORY = (
    ("system_memory_usage_percent", "percent"),
    ("system_memory_used_bytes", "used"),
    ("system_memory_available_bytes", "available"),
    ("system_memory_total_bytes", "total"),
    ("system_memory_free_bytes", "free"),
    ("system_memory_buffers_bytes", "buffers"),
    ("system_memory_cached_bytes", "cached"),
)
_SWAP = (
    ("system_swap_used_bytes", "used"),
    ("system_swap_free_bytes", "free"),
    ("system_swap_total_bytes", "total"),
    ("system_swap_in_bytes_total", "sin"),
    ("system_swap_out_bytes_total", "sout"),
)


class MemoryCollector:
    """`system_memory_*` and `system_swap_*`; swap percent is omitted when there is no swap."""

    name = "memory"

    def __init__(self, source: Any | None = None) -> None:
        """`source`: psutil or anything with its two memory calls; default /proc."""
        self._owned = ProcSource() if source is None else None
        self._source: Any = source if source is not None else self._owned

    def collect(self) -> list[Reading]:
        """One virtual_memory() and one swap_memory() reading."""
        out: list[Reading] = []
        vm = self._source.virtual_memory()
        for metric, fld in _MEMORY:
            add(out, metric, (), getattr(vm, fld, None))
        sw = self._source.swap_memory()
        for metric, fld in _SWAP:
            add(out, metric, (), getattr(sw, fld, None))
        # With no swap configured psutil says 0 %; the honest reading is "undefined".
        if getattr(sw, "total", 0):
            add(out, "system_swap_usage_percent", (), getattr(sw, "percent", None))
        return out

    def close(self) -> None:
        """Close the /proc files of the default source."""
        if self._owned is not None:
            self._owned.close()
