"""Number of processes on the host."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import psutil

from legion.node_agent.collectors._base import Reading


class ProcessCollector:
    """`system_processes`: how many processes exist (one directory listing of /proc)."""

    name = "processes"

    def __init__(self, source: ModuleType | Any = psutil) -> None:
        self._source = source

    def collect(self) -> list[Reading]:
        """Count pids."""
        return [("system_processes", (), float(len(self._source.pids())))]
