"""`ProcSource` (the collectors' default /proc reader) against psutil on this real machine.

Each pair of readings is taken back to back, so counters that move between them (CPU times, bytes
on loopback while other tests run) are compared within a tolerance that such a gap allows; the
fields that do not move must be equal.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from legion.node_agent.collectors import (
    CpuCollector,
    DiskIOCollector,
    MemoryCollector,
    NetworkCollector,
    ProcessCollector,
    UptimeCollector,
)
from legion.node_agent.collectors.procfs import ProcFile, ProcSource


@pytest.fixture
def src() -> Any:
    s = ProcSource()
    yield s
    s.close()


def close_enough(a: float, b: float, rel: float, abs_: float) -> bool:
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


def test_cpu_times_per_cpu_match_psutil(src: ProcSource) -> None:
    ours = src.cpu_times(percpu=True)
    theirs = psutil.cpu_times(percpu=True)
    assert len(ours) == len(theirs) == psutil.cpu_count()
    for a, b in zip(ours, theirs, strict=True):
        assert a._fields[: len(b._fields)] == b._fields
        for f in b._fields:  # seconds; the two reads are microseconds apart (a tick is 10 ms)
            assert close_enough(getattr(a, f), getattr(b, f), 0, 0.5), (f, a, b)
    total = src.cpu_times(percpu=False)
    assert close_enough(total.user, psutil.cpu_times().user, 0, 1.0)


def test_memory_and_swap_match_psutil(src: ProcSource) -> None:
    ours, theirs = src.virtual_memory(), psutil.virtual_memory()
    assert ours.total == theirs.total  # does not move
    for f in ("available", "used", "free", "buffers", "cached", "shared", "active", "inactive",
              "slab"):  # pages move between the two reads on a busy machine: 64 MiB or 2 %
        assert close_enough(getattr(ours, f), getattr(theirs, f), 0.02, 64 << 20), f
    assert close_enough(ours.percent, theirs.percent, 0, 1.0)
    assert ours.percent == round((ours.total - ours.available) / ours.total * 100, 1)
    s_ours, s_theirs = src.swap_memory(), psutil.swap_memory()
    assert s_ours.total == s_theirs.total
    assert close_enough(s_ours.sin, s_theirs.sin, 0.01, 1 << 20)
    assert close_enough(s_ours.sout, s_theirs.sout, 0.01, 1 << 20)
    assert close_enough(s_ours.used, s_theirs.used, 0.01, 16 << 20)
    assert s_ours.percent == (round(s_ours.used / s_ours.total * 100, 1) if s_ours.total else 0.0)


def test_disk_io_counters_match_psutil(src: ProcSource) -> None:
    ours = src.disk_io_counters(perdisk=True, nowrap=True)
    theirs = psutil.disk_io_counters(perdisk=True, nowrap=True)
    assert set(ours) == set(theirs) and ours
    for dev, b in theirs.items():
        a = ours[dev]
        assert a._fields == b._fields
        for f in b._fields:  # counts and ms: this test's own neighbours may do I/O meanwhile
            assert close_enough(getattr(a, f), getattr(b, f), 0.01, 4 << 20), (dev, f, a, b)


def test_net_io_counters_match_psutil(src: ProcSource) -> None:
    ours = src.net_io_counters(pernic=True, nowrap=True)
    theirs = psutil.net_io_counters(pernic=True, nowrap=True)
    assert set(ours) == set(theirs) and "lo" in ours
    for nic, b in theirs.items():
        a = ours[nic]
        assert a._fields == b._fields
        for f in b._fields:  # loopback moves while other tests run
            assert close_enough(getattr(a, f), getattr(b, f), 0.01, 1 << 20), (nic, f, a, b)


def test_boot_time_pids_and_load_match_psutil(src: ProcSource) -> None:
    assert abs(src.boot_time() - psutil.boot_time()) <= 1.0  # both whole seconds of one value
    assert src.boot_time() == float(int(src.boot_time()))
    mine, theirs = set(src.pids()), set(psutil.pids())
    assert os.getpid() in mine
    assert len(mine ^ theirs) <= 20  # processes of concurrent tests may come and go meanwhile
    assert src.getloadavg() == pytest.approx(psutil.getloadavg(), abs=0.5)


def test_counters_move_and_the_file_is_read_afresh(src: ProcSource) -> None:
    before = src.net_io_counters()["lo"]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as c:
            conn, _ = server.accept()
            c.sendall(b"x" * 100_000)
            got = 0
            while got < 100_000:
                got += len(conn.recv(65536))
            conn.close()
    after = src.net_io_counters()["lo"]
    assert after.bytes_sent >= before.bytes_sent + 100_000  # pread at 0 renders anew


def test_nowrap_folds_a_decrease_like_psutil() -> None:
    """psutil's nowrap: a counter that goes down continues from where it was; a device that
    disappears and comes back starts from its new value (a counter reset readers can see)."""
    src = ProcSource()
    lines = iter([
        "Inter-|\n face |\n  eth0: 100 10 0 0 0 0 0 0 200 20 0 0 0 0 0 0\n",
        "Inter-|\n face |\n  eth0: 30 13 0 0 0 0 0 0 250 25 0 0 0 0 0 0\n",
        "Inter-|\n face |\n  eth0: 40 14 0 0 0 0 0 0 260 26 0 0 0 0 0 0\n",
        "Inter-|\n face |\n",
        "Inter-|\n face |\n  eth0: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n",
    ])
    src._read = lambda name: next(lines).encode()  # type: ignore[method-assign]
    recv = [src.net_io_counters().get("eth0") for _ in range(5)]
    assert [r.bytes_recv if r else None for r in recv] == [100, 130, 140, None, 5]
    assert recv[2].bytes_sent == 260


def test_proc_file_grows_its_buffer(tmp_path: Path) -> None:
    p = tmp_path / "big"
    p.write_bytes(b"x" * 100_000)
    f = ProcFile(str(p))
    try:
        assert len(f.read()) == 100_000
        p.write_bytes(b"y" * 10)
        assert f.read() == b"y" * 10
    finally:
        f.close()
        f.close()


Build = Callable[[Any], Any]


@pytest.mark.parametrize("build", [CpuCollector, MemoryCollector, DiskIOCollector,
                                   NetworkCollector, ProcessCollector, UptimeCollector])
def test_collectors_on_proc_equal_collectors_on_psutil(build: Build) -> None:
    """The same collector over /proc and over psutil gives the same series and close values."""
    ours, theirs = build(None), build(psutil)
    time.sleep(0.15)  # the CPU collector's percentages need a window
    try:
        a = {(n, lab): v for n, lab, v in ours.collect()}
        b = {(n, lab): v for n, lab, v in theirs.collect()}
    finally:
        ours.close()
    assert set(a) == set(b) and a
    for key, v in b.items():
        if key[0] == "system_processes":
            assert abs(a[key] - v) <= 20, key
        elif key[0] == "system_cpu_usage_percent":
            assert 0.0 <= a[key] <= 100.0
        elif key[0] == "system_uptime_seconds":
            assert abs(a[key] - v) <= 1.5
        else:
            assert close_enough(a[key], v, 0.02, 64 << 20), (key, a[key], v)


def test_swap_right_after_memory_parses_the_same_meminfo_read() -> None:
    src = ProcSource()
    reads: list[str] = []
    real = src._read

    def counting(name: str) -> bytes:
        reads.append(name)
        return real(name)

    src._read = counting  # type: ignore[method-assign]
    try:
        src.virtual_memory()
        src.swap_memory()
        assert reads == ["meminfo", "vmstat"]  # one snapshot of /proc/meminfo per tick
        src.swap_memory()  # alone: reads afresh
        assert reads[2:] == ["meminfo", "vmstat"]
    finally:
        src.close()


def test_pids_follow_a_process_that_comes_and_goes(src: ProcSource) -> None:
    first = src.pids()
    assert os.getpid() in first
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert child.pid in src.pids()
    finally:
        child.communicate(b"")
    assert child.pid not in src.pids()  # reaped: gone from the next reading


def test_pids_are_listed_again_only_when_a_task_came_or_went(
        src: ProcSource, monkeypatch: pytest.MonkeyPatch) -> None:
    if src._task_marker() is None:
        pytest.fail("this suite runs in the initial pid namespace; the marker must be there")
    listings = []
    real_listdir = os.listdir

    def counting(path: Any) -> list[str]:
        listings.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting)
    marker = [b"100 5000\n"]
    monkeypatch.setattr(src, "_task_marker", lambda: marker[0])
    a, b = src.pids(), src.pids()
    assert a == b and len(listings) == 1  # nothing created or reaped: the same listing
    marker[0] = b"100 5001\n"  # a task was created (and one reaped: the count is the same)
    src.pids()
    assert len(listings) == 2
    marker[0] = b"99 5001\n"  # one reaped
    src.pids()
    assert len(listings) == 3


def test_disk_partitions_and_usage_match_psutil(src: ProcSource) -> None:
    for all_ in (False, True):
        ours = [tuple(p) for p in src.disk_partitions(all=all_)]
        theirs = [tuple(p) for p in psutil.disk_partitions(all=all_)]
        assert len(ours) == len(theirs) > 0
        for o, t in zip(ours, theirs, strict=True):
            assert o[1:] == t[1:]
            assert o[0] == t[0] or o[0] == "/dev/root"  # psutil may resolve that one
    assert any(p.mountpoint == "/" for p in src.disk_partitions(all=True))
    a, b = src.disk_usage("/"), psutil.disk_usage("/")
    assert a.total == b.total
    assert close_enough(a.used, b.used, 0, 256 << 20)  # other tests write meanwhile
    assert close_enough(a.free, b.free, 0, 256 << 20)
    assert close_enough(a.percent, b.percent, 0, 0.2)


def test_mount_fields_are_unescaped(src: ProcSource) -> None:
    src._read = lambda name: {  # type: ignore[method-assign]
        "filesystems": b"nodev\tproc\n\text4\n",
        "self/mounts": b"/dev/vdb1 /mnt/with\\040space ext4 rw 0 0\nproc /proc proc rw 0 0\n"
                       b"none /x ext4 rw 0 0\n",
    }[name]
    assert [tuple(p) for p in src.disk_partitions()] == [
        ("/dev/vdb1", "/mnt/with space", "ext4", "rw")]
    assert [p.device for p in src.disk_partitions(all=True)] == ["/dev/vdb1", "proc", ""]


def test_the_agent_process_does_not_import_psutil() -> None:
    """All collectors read /proc themselves now: psutil's ~1.6 MiB stay out of the agent."""
    code = ("import sys; from legion.node_agent.collectors import available_collectors;"
            "import legion.node_agent.agent; cs = available_collectors();"
            "[c.collect() for c in cs]; print('psutil' in sys.modules, len(cs))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split()[0] == "False"


def test_device_labels_are_built_once_and_forgotten_when_gone() -> None:
    import re

    from legion.node_agent.collectors._base import DeviceLabels

    labels = DeviceLabels("interface", re.compile(r"^veth"))
    first = labels.kept(["eth0", "veth1", "lo"])
    assert first == [("eth0", (("interface", "eth0"),)), ("lo", (("interface", "lo"),))]
    assert labels.kept(["lo", "eth0"])[0][1] is first[0][1]  # the same tuple: built once
    for i in range(1000):  # containers come and go: the table does not grow with them
        labels.kept(["eth0", f"veth{i}"])
    assert len(labels._known) == 2
