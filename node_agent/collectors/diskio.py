"""Disk I/O per block device: bytes, operations and time counters (label `device`)."""

from __future__ import annotations

import re
from typing import Any

from legion.node_agent.collectors._base import DeviceLabels, Reading, add
from legion.node_agent.collectors.procfs import ProcSource

# node_exporter's default: RAM disks, loop devices, floppies and partitions (the whole disk is
# already counted) are skipped.
DEFAULT_DEVICE_EXCLUDE = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]+|nvme\d+n\d+p|mmcblk\d+p)\d+$"
MAX_DEVICES = 64

# (metric, field of disk_io_counters(), scale to the metric's unit)
_FIELDS = (
    ("system_disk_read_bytes_total", "read_bytes", 1.0),
    ("system_disk_written_bytes_total", "write_bytes", 1.0),
    ("system_disk_reads_completed_total", "read_count", 1.0),
    ("system_disk_writes_completed_total", "write_count", 1.0),
    ("system_disk_read_time_seconds_total", "read_time", 1e-3),
    ("system_disk_write_time_seconds_total", "write_time", 1e-3),
    ("system_disk_io_time_seconds_total", "busy_time", 1e-3),
)


class DiskIOCollector:
    """`system_disk_*_total{device}` counters, passed through as read.

    psutil's `nowrap` folds 32-bit kernel wraps into monotonic values; a real reset (device
    re-attached) shows up as a decrease, which readers treat as a counter reset (Prometheus rules).
    """

    name = "diskio"

    def __init__(self, source: Any | None = None,
                 device_exclude: str = DEFAULT_DEVICE_EXCLUDE,
                 max_devices: int = MAX_DEVICES) -> None:
        """`source`: psutil or anything with its `disk_io_counters`; default /proc."""
        self._owned = ProcSource() if source is None else None
        self._source: Any = source if source is not None else self._owned
        self._labels = DeviceLabels("device", re.compile(device_exclude))
        self._max_devices = max_devices

    def collect(self) -> list[Reading]:
        """One disk_io_counters(perdisk=True) reading; devices gone since last tick are omitted."""
        out: list[Reading] = []
        per_disk = self._source.disk_io_counters(perdisk=True, nowrap=True) or {}
        for dev, labels in self._labels.kept(per_disk)[: self._max_devices]:
            c = per_disk[dev]
            for metric, fld, scale in _FIELDS:
                v = getattr(c, fld, None)
                if v is not None:
                    add(out, metric, labels, v * scale)
        return out

    def close(self) -> None:
        """Close the /proc files of the default source."""
        if self._owned is not None:
            self._owned.close()
