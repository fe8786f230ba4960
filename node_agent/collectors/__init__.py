"""Host collectors: one module each, one table (`COLLECTORS`), one protocol (`Collector`).

A collector reads one source (/proc through `procfs.ProcSource` by default, psutil's API; NVML
for GPUs) and returns `(name, labels, value)` readings; the scheduler stamps the time and does
the failure accounting.
Adding one means writing a module and one line in `COLLECTORS`, nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from legion.node_agent.collectors._base import CollectorError, CollectorUnavailable, Reading
from legion.node_agent.collectors.cpu import CpuCollector
from legion.node_agent.collectors.disk import DiskUsageCollector
from legion.node_agent.collectors.diskio import DiskIOCollector
from legion.node_agent.collectors.gpu import GpuCollector
from legion.node_agent.collectors.load import LoadCollector
from legion.node_agent.collectors.memory import MemoryCollector
from legion.node_agent.collectors.network import NetworkCollector
from legion.node_agent.collectors.processes import ProcessCollector
from legion.node_agent.collectors.uptime import UptimeCollector

log = logging.getLogger(__name__)


@runtime_checkable
class Collector(Protocol):
    """Anything with a `name` and a `collect()` returning (name, labels, value) readings."""

    name: str

    def collect(self) -> list[Reading]:
        """Read the source once; omit what is missing; raise on failure (the scheduler counts)."""
        ...


COLLECTORS: dict[str, Callable[[], Collector]] = {
    "cpu": CpuCollector,
    "memory": MemoryCollector,
    "disk": DiskUsageCollector,
    "diskio": DiskIOCollector,
    "network": NetworkCollector,
    "load": LoadCollector,
    "processes": ProcessCollector,
    "uptime": UptimeCollector,
    "gpu": GpuCollector,
}


def available_collectors(names: Iterable[str] = (),
                     table: dict[str, Callable[[], Collector]] | None = None) -> list[Collector]:
    """Instantiate the named collectors (all when empty); skip unavailable ones, logged once."""
    table = COLLECTORS if table is None else table
    wanted = list(names) or list(table)  # names checked by the `agent` section's validate()
    built: list[Collector] = []
    for name in wanted:
        try:
            built.append(table[name]())
        except CollectorUnavailable as exc:
            log.info("collector=%s status=unavailable reason=%r", name, str(exc))
    return built


def close_collectors(collectors: Iterable[Collector]) -> None:
    """Call `close()` on the collectors that hold a resource (NVML)."""
    for c in collectors:
        close = getattr(c, "close", None)
        if callable(close):
            close()


__all__ = [
    "COLLECTORS", "Collector", "CollectorError", "CollectorUnavailable", "CpuCollector",
    "DiskIOCollector", "DiskUsageCollector", "GpuCollector", "LoadCollector", "MemoryCollector",
    "NetworkCollector", "ProcessCollector", "Reading", "UptimeCollector", "available_collectors",
    "close_collectors",
]
