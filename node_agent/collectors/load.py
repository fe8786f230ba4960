"""Load average over 1, 5 and 15 minutes."""

from __future__ import annotations

from typing import Any

from legion.node_agent.collectors._base import CollectorUnavailable, Reading, add
from legion.node_agent.collectors.procfs import ProcSource


class LoadCollector:
    """`system_load1`, `system_load5`, `system_load15` (runnable tasks, unitless)."""

    name = "load"

    def __init__(self, source: Any | None = None) -> None:
        """`source`: psutil or anything with its `getloadavg`; default `ProcSource` (the C
        library's)."""
        source = ProcSource() if source is None else source
        if not hasattr(source, "getloadavg"):
            raise CollectorUnavailable("load average is not available on this platform")
        self._source = source

    def collect(self) -> list[Reading]:
        """One getloadavg() reading."""
        out: list[Reading] = []
        one, five, fifteen = self._source.getloadavg()
        add(out, "system_load1", (), one)
        add(out, "system_load5", (), five)
        add(out, "system_load15", (), fifteen)
        return out
