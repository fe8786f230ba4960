"""Network I/O per interface: bytes, packets, errors and drops (label `interface`)."""

from __future__ import annotations

import re
from typing import Any

from legion.node_agent.collectors._base import DeviceLabels, Reading, add
from legion.node_agent.collectors.procfs import ProcSource

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

    def __init__(self, source: Any | None = None,
                 interface_exclude: str = DEFAULT_INTERFACE_EXCLUDE,
                 max_interfaces: int = MAX_INTERFACES) -> None:
        """`source`: psutil or anything with its `net_io_counters`; default /proc."""
        self._owned = ProcSource() if source is None else None
        self._source: Any = source if source is not None else self._owned
        self._labels = DeviceLabels("interface", re.compile(interface_exclude))
        self._max_interfaces = max_interfaces

    def collect(self) -> list[Reading]:
        """One net_io_counters(pernic=True) reading."""
        out: list[Reading] = []
        per_nic = self._source.net_io_counters(pernic=True, nowrap=True) or {}
        for nic, labels in self._labels.kept(per_nic)[: self._max_interfaces]:
            c = per_nic[nic]
            for metric, fld in _FIELDS:
                add(out, metric, labels, getattr(c, fld, None))
        return out

    def close(self) -> None:
        """Close the /proc files of the default source."""
        if self._owned is not None:
            self._owned.close()
