"""Host uptime and boot time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from legion.node_agent.collectors._base import Reading, add
from legion.node_agent.collectors.procfs import ProcSource


class UptimeCollector:
    """`system_uptime_seconds` and `system_boot_time_seconds` (Unix time of the last boot)."""

    name = "uptime"

    def __init__(self, source: Any | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        """`source`: psutil or anything with its `boot_time`; default /proc (`ProcSource`)."""
        self._owned = ProcSource() if source is None else None
        self._source: Any = source if source is not None else self._owned
        self._wall_clock = wall_clock

    def collect(self) -> list[Reading]:
        """Boot time (whole seconds, as /proc/stat says it); uptime is the wall clock minus it."""
        out: list[Reading] = []
        boot = float(self._source.boot_time())
        add(out, "system_boot_time_seconds", (), boot)
        uptime = self._wall_clock() - boot
        if uptime >= 0:  # a wall clock set back before boot says nothing true
            add(out, "system_uptime_seconds", (), uptime)
        return out

    def close(self) -> None:
        """Close the /proc files of the default source."""
        if self._owned is not None:
            self._owned.close()
