"""Network I/O per interface: bytes, packets, errors and drops (label `interface`)."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import psutil

from legion.node_agent.collectors._base import Reading, add, label_value

# Container veth pairs come and go with every container: unbounded series for no insight.
DEFAULT_INTERFACE_EXCLUDE = r"^veth"
MAX_INTERFACES = 64

_FIELDS = (
    ("system_network_received_bytes_total", "bytes_recv"),
    ("system_network_sent_bytes_total", "bytes_sent"),
    ("system_network_received_packets_total", "packets_recv"),
    ("system_network_sent_packets_total", "packets_sent"),
    ("system_network_receive_errors_total", "errin"),
    ("system_network_transmit_errors_total", "errout"),
    ("system_network_receive_drops_total", "dropin"),
    ("system_network_transmit_drops_total", "dropout"),
)


class NetworkCollector:
    """`system_network_*_total{interface}` counters, passed through as read.

    psutil's `nowrap` folds 32-bit kernel wraps; an interface that disappears is omitted (never
    reported as 0) and a re-created one restarts from its new counters (a counter reset).
    """

    name = "network"

    def __init__(self, source: ModuleType | Any = psutil,
                 interface_exclude: str = DEFAULT_INTERFACE_EXCLUDE,
                 max_interfaces: int = MAX_INTERFACES) -> None:
        self._source = source
        self._exclude = re.compile(interface_exclude)
        self._max_interfaces = max_interfaces

    def collect(self) -> list[Reading]:
        """One net_io_counters(pernic=True) reading."""
        out: list[Reading] = []
        per_nic = self._source.net_io_counters(pernic=True, nowrap=True) or {}
        nics = sorted(n for n in per_nic if not self._exclude.search(n))
        for nic in nics[: self._max_interfaces]:
            c = per_nic[nic]
            labels = (("interface", label_value(nic)),)
            for metric, fld in _FIELDS:
                add(out, metric, labels, getattr(c, fld, None))
        return out
