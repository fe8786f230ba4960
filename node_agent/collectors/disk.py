"""Disk usage per mount: percent, used, free and total bytes (label `mount`)."""

from __future__ import annotations

import re
import time
from typing import Any

from legion.node_agent.collectors._base import Reading, add, label_value
from legion.node_agent.collectors.procfs import ProcSource

# node_exporter's defaults: kernel/virtual trees and container storage are not disks to watch.
# Containers bind-mount single files (/etc/hosts, ...) from the host disk: not filesystems.
DEFAULT_MOUNT_EXCLUDE = (
    r"^/(dev|proc|sys|run/credentials/.+|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
    r"|^/etc/(hosts|hostname|resolv\.conf)$"
)
DEFAULT_FSTYPE_EXCLUDE = (
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|"
    r"iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|"
    r"erofs|sysfs|tracefs|tmpfs|ramfs)$"
)
MAX_MOUNTS = 64
# Listing mounts (two /proc reads and a regex per line) costs more than the statvfs calls
# themselves: the list is re-read this often, and a vanished mount is omitted meanwhile.
MOUNTS_REFRESH_SECS = 60.0


class DiskUsageCollector:
    """`system_disk_usage_percent{mount}` plus used/free/total bytes for real filesystems.

    Pseudo filesystems and container storage are skipped, a device mounted several times (bind
    mounts) is reported once at its shortest mount point, and `/` is always reported, even on an
    overlay root, because the seed's disk alert is written against it.
    """

    name = "disk"

    def __init__(self, source: Any | None = None,
                 mount_exclude: str = DEFAULT_MOUNT_EXCLUDE,
                 fstype_exclude: str = DEFAULT_FSTYPE_EXCLUDE,
                 max_mounts: int = MAX_MOUNTS,
                 refresh_secs: float = MOUNTS_REFRESH_SECS) -> None:
        """`source`: psutil or anything with its `disk_partitions` and `disk_usage`; default
        /proc and statvfs (`ProcSource`)."""
        self._owned = ProcSource() if source is None else None
        self._source: Any = source if source is not None else self._owned
        self._mount_exclude = re.compile(mount_exclude)
        self._fstype_exclude = re.compile(fstype_exclude)
        self._max_mounts = max_mounts
        self._refresh_secs = refresh_secs
        self._listed: tuple[float, list[str]] | None = None  # (monotonic time, mounts)

    def mounts(self) -> list[str]:
        """The mount points this collector reports, in order."""
        by_device: dict[str, str] = {}
        plain: set[str] = set()
        root_device = None
        for p in self._source.disk_partitions(all=False):
            mnt, dev = p.mountpoint, p.device or ""
            if mnt == "/":
                root_device = dev
                continue  # always reported, see below
            if self._mount_exclude.search(mnt) or self._fstype_exclude.search(p.fstype or ""):
                continue
            if not dev.startswith("/"):  # "none", "tmpfs": not a shared block device
                plain.add(mnt)
            elif dev not in by_device or (len(mnt), mnt) < (len(by_device[dev]), by_device[dev]):
                by_device[dev] = mnt
        if root_device is not None:
            by_device.pop(root_device, None)  # a bind mount of the root filesystem
        others = sorted(plain | set(by_device.values()))
        return (["/"] + others)[: self._max_mounts]

    def collect(self) -> list[Reading]:
        """statvfs each mount; a mount that vanished or is unreadable is omitted this tick."""
        out: list[Reading] = []
        now = time.monotonic()
        if self._listed is None or now - self._listed[0] >= self._refresh_secs:
            self._listed = (now, self.mounts())
        for mnt in self._listed[1]:
            try:
                u = self._source.disk_usage(mnt)
            except OSError:  # unmounted between listing and stat, or no permission
                continue
            labels = (("mount", label_value(mnt)),)
            add(out, "system_disk_usage_percent", labels, u.percent)
            add(out, "system_disk_used_bytes", labels, u.used)
            add(out, "system_disk_free_bytes", labels, u.free)
            add(out, "system_disk_total_bytes", labels, u.total)
        return out

    def close(self) -> None:
        """Close the /proc files of the default source."""
        if self._owned is not None:
            self._owned.close()
