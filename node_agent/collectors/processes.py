"""Number of processes on the host."""

from __future__ import annotations

from typing import Any

from legion.node_agent.collectors._base import Reading
from legion.node_agent.collectors.procfs import ProcSource


class ProcessCollector:
    """`system_processes`: how many processes exist (one directory listing of /proc)."""

    name = "processes"

    def __init__(self, source: Any | None = None) -> None:
        """`source`: psutil or anything with its `pids`; default /proc."""
        self._owned = ProcSource() if source is None else None
        self._source: Any = source if source is not None else self._owned

    def collect(self) -> list[Reading]:
        """Count pids."""
        return [("system_processes", (), float(len(self._source.pids())))]

    def close(self) -> None:
        """Close the /proc files of the default source."""
        if self._owned is not None:
            self._owned.close()
