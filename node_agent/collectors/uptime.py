"""Host uptime and boot time."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import psutil

from legion.node_agent.collectors._base import Reading, add


class UptimeCollector:
    """`system_uptime_seconds` and `system_boot_time_seconds` (Unix time of the last boot)."""

    name = "uptime"

    def __init__(self, source: ModuleType | Any = psutil,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._wall_clock = wall_clock

    def collect(self) -> list[Reading]:
        """boot_time() is cached by psutil; uptime is the wall clock minus it."""
        out: list[Reading] = []
        boot = float(self._source.boot_time())
        add(out, "system_boot_time_seconds", (), boot)
        uptime = self._wall_clock() - boot
        if uptime >= 0:  # a wall clock set back before boot says nothing true
            add(out, "system_uptime_seconds", (), uptime)
        return out
