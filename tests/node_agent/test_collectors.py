"""Collectors: one contract test over COLLECTORS on real psutil, recorded readings for edge cases,
and the GPU collector against a fake NVML (the only fake in these tests: no GPU can exist on the
machines that run this suite, so real NVML calls cannot be exercised here; bench/gpu_check.py
runs the real thing on a GPU host)."""

from __future__ import annotations

import builtins
import collections
import functools
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from legion.cli.config import config_from_dict
from legion.kernel.errors import ConfigError
from legion.node_agent.collectors import (
    COLLECTORS,
    Collector,
    CollectorError,
    CollectorUnavailable,
    CpuCollector,
    DiskIOCollector,
    DiskUsageCollector,
    GpuCollector,
    LoadCollector,
    MemoryCollector,
    NetworkCollector,
    ProcessCollector,
    UptimeCollector,
    available_collectors,
    close_collectors,
)
from legion.proto import MetricsBatch, Sample, decode, encode
from legion.proto.limits import MAX_LABEL_VALUE_LEN, MAX_LABELS
from legion.proto.messages import KIND_METRICS, Envelope
from legion.proto.names import LABEL_KEY_RE, NAME_RE

FIXTURES = Path(__file__).parent / "fixtures"

UNIT = r"(percent|bytes|seconds|celsius|watts|joules)"
COUNT = r"(packets|errors|drops|reads_completed|writes_completed)"
UNITLESS_GAUGES = {"system_load1", "system_load5", "system_load15", "system_processes"}
NAME_CONVENTION = re.compile(rf"system_[a-z0-9_]+_({UNIT}(_total)?|{COUNT}_total)\Z")


# ---- recorded readings -------------------------------------------------------------------------
def _decode(obj: Any) -> Any:
    if isinstance(obj, dict) and "_type" in obj:
        fields = {k: _decode(v) for k, v in obj.items() if k != "_type"}
        return collections.namedtuple(obj["_type"], list(fields))(**fields)
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


class Recorded:
    """Plays back psutil results recorded on a real machine (see fixtures/record.py)."""

    def __init__(self, name: str) -> None:
        self.data = json.loads((FIXTURES / f"{name}.json").read_text())
        self._calls: dict[str, list[Any]] = self.data["calls"]
        self._pos: dict[str, int] = {}
        self.kwargs: dict[str, list[dict[str, Any]]] = {}

    def __getattr__(self, fn: str) -> Any:
        if fn.startswith("_") or not any(k.split(":")[0] == fn for k in self._calls):
            raise AttributeError(fn)
        return functools.partial(self._call, fn)

    def _call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        self.kwargs.setdefault(fn, []).append(kwargs)
        flags = sorted(k for k, v in kwargs.items() if v is True and k != "nowrap")
        key = ":".join([fn, *map(str, args), *flags])
        if key not in self._calls:
            raise FileNotFoundError(key)
        results = self._calls[key]
        i = self._pos.get(key, 0)
        self._pos[key] = i + 1
        result = results[min(i, len(results) - 1)]
        if isinstance(result, dict) and "_raise" in result:
            raise getattr(builtins, result["_raise"])(key)
        return _decode(result)


def by_key(readings: list[tuple[str, Any, float]]) -> dict[tuple[str, Any], float]:
    """Readings as {(name, labels): value}, asserting there are no duplicates."""
    out = {(n, lab): v for n, lab, v in readings}
    assert len(out) == len(readings), "duplicate (name, labels) in one collect()"
    return out


# ---- contract over the table, on real psutil ---------------------------------------------------
def _check_reading(name: str, labels: Any, value: float) -> None:
    assert isinstance(name, str) and NAME_RE.match(name), name
    assert name in UNITLESS_GAUGES or NAME_CONVENTION.match(name), f"unit/_total convention: {name}"
    assert isinstance(value, float) and math.isfinite(value), (name, value)
    assert isinstance(labels, tuple) and len(labels) <= MAX_LABELS
    assert list(labels) == sorted(labels), f"labels not canonical: {labels}"
    for pair in labels:
        assert isinstance(pair, tuple) and len(pair) == 2
        k, v = pair
        assert isinstance(k, str) and LABEL_KEY_RE.match(k), k
        assert isinstance(v, str) and 0 < len(v) <= MAX_LABEL_VALUE_LEN, (k, v)
    if name.endswith("_percent"):
        assert 0.0 <= value <= 100.0, (name, labels, value)
    if name.endswith(("_total", "_bytes")) or name in UNITLESS_GAUGES:
        assert value >= 0.0, (name, labels, value)


@pytest.mark.parametrize("key", sorted(COLLECTORS))
def test_contract_on_real_psutil(key: str) -> None:
    try:
        collector = COLLECTORS[key]()
    except CollectorUnavailable as exc:
        # Only the GPU collector may be unavailable (no NVML here; it was run on a real H100
        # through bench/gpu_check.py). Its no-GPU contract: a clear reason at construction.
        assert key == "gpu", f"{key} must work on every Linux host: {exc}"
        assert "NVML" in str(exc)
        return
    try:
        assert isinstance(collector, Collector)
        assert collector.name == key
        first = collector.collect()
        time.sleep(0.05)
        second = collector.collect()
        assert second, f"{key} collected nothing on a real machine"
        for readings in (first, second):
            by_key(readings)
            for name, labels, value in readings:
                _check_reading(name, labels, value)
    finally:
        close_collectors([collector])


def test_seed_names_and_volume_on_real_psutil() -> None:
    collectors = available_collectors()
    time.sleep(0.2)  # so the cpu collector has a delta since it was built
    readings = [r for c in collectors for r in c.collect()]
    got = by_key(readings)
    assert ("system_cpu_usage_percent", ()) in got
    assert ("system_memory_usage_percent", ()) in got
    assert ("system_disk_usage_percent", (("mount", "/"),)) in got
    assert sum(1 for n, _ in got if n == "system_cpu_usage_percent") == 1 + psutil.cpu_count()
    assert len(readings) >= 60, f"only {len(readings)} metrics per tick"
    # What the collectors produce must pass the wire codec's validation.
    ts = int(time.time() * 1000)
    batch = MetricsBatch.from_samples(Sample(n, lab, v, ts) for n, lab, v in readings)
    env = decode(encode(Envelope(KIND_METRICS, "node-1", 1, 1, ts, batch)))
    assert env.body == batch


def test_importing_collectors_does_not_import_nvml() -> None:
    code = ("import sys, legion.node_agent.collectors, legion.node_agent.scheduler; "
            "print('pynvml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="this host has an NVIDIA GPU")
def test_no_gpu_is_one_info_line_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="legion.node_agent.collectors"):
        built = available_collectors()
    assert "gpu" not in {c.name for c in built}
    assert {c.name for c in built} == set(COLLECTORS) - {"gpu"}
    gpu_lines = [r for r in caplog.records if "gpu" in r.getMessage()]
    assert len(gpu_lines) == 1 and gpu_lines[0].levelno == logging.INFO
    assert "status=unavailable" in gpu_lines[0].getMessage()


def test_available_collectors_subset_and_unknown_name() -> None:
    assert [c.name for c in available_collectors(["memory", "load"])] == ["memory", "load"]
    with pytest.raises(ConfigError, match="agent.collectors: unknown collector 'nope'"):
        config_from_dict({"agent": {"collectors": ["cpu", "nope"]}})  # checked at load


# ---- recorded readings: values and edge cases --------------------------------------------------
def test_cpu_percent_from_recorded_deltas() -> None:
    rec = Recorded("baseline")
    ticks = rec.data["calls"]["cpu_times:percpu"]
    cpu = CpuCollector(rec)
    got = by_key(cpu.collect())

    def split(core: dict[str, float]) -> tuple[float, float]:
        total = sum(v for k, v in core.items() if k not in ("_type", "guest", "guest_nice"))
        return total, total - core["idle"] - core["iowait"]

    before, after = [split(c) for c in ticks[0]], [split(c) for c in ticks[1]]
    for i, (b, a) in enumerate(zip(before, after)):
        want = 100.0 * (a[1] - b[1]) / (a[0] - b[0])
        assert got[("system_cpu_usage_percent", (("cpu", str(i)),))] == pytest.approx(want)
    tb = [sum(x) for x in zip(*before)]
    ta = [sum(x) for x in zip(*after)]
    want_total = 100.0 * (ta[1] - tb[1]) / (ta[0] - tb[0])
    assert got[("system_cpu_usage_percent", ())] == pytest.approx(want_total)
    user = sum(c["user"] for c in ticks[1])
    assert got[("system_cpu_seconds_total", (("mode", "user"),))] == pytest.approx(user)
    assert rec.kwargs["cpu_times"][-1] == {"percpu": True}  # never interval= (no sleeping)


def test_cpu_percent_omitted_when_no_time_passed() -> None:
    frozen = list(psutil.cpu_times(percpu=True))

    class Frozen:  # /proc/stat read twice within one clock tick of the kernel
        def cpu_times(self, percpu: bool = False) -> list[Any]:
            return frozen

    names = {n for n, _, _ in CpuCollector(Frozen()).collect()}
    assert "system_cpu_usage_percent" not in names  # no delta: missing, never 0
    assert "system_cpu_seconds_total" in names


def test_cpu_hotplug_and_short_windows() -> None:
    rec = Recorded("baseline")
    ticks = [_decode(t) for t in rec.data["calls"]["cpu_times:percpu"]]

    class Src:
        def __init__(self) -> None:
            self.next: list[Any] = ticks[0]

        def cpu_times(self, percpu: bool = False) -> list[Any]:
            return self.next

    src = Src()
    cpu = CpuCollector(src)
    src.next = ticks[1][:-1]  # one CPU went offline: indexes no longer match
    assert not [r for r in cpu.collect() if r[0] == "system_cpu_usage_percent"]
    src.next = [c._replace(idle=c.idle + 0.001) for c in ticks[1][:-1]]  # 1 ms later
    assert not [r for r in cpu.collect() if r[0] == "system_cpu_usage_percent"]
    src.next = [c._replace(idle=c.idle + 1.0, user=c.user + 1.0) for c in ticks[1][:-1]]
    pct = by_key([r for r in cpu.collect() if r[0] == "system_cpu_usage_percent"])
    assert pct[("system_cpu_usage_percent", ())] == pytest.approx(50.0)  # from the kept baseline
    assert len(pct) == len(ticks[1])  # total + every online core


def test_counter_reset() -> None:
    rec = Recorded("counter_reset")
    cpu, net, dio = CpuCollector(rec), NetworkCollector(rec), DiskIOCollector(rec)
    calls = rec.data["calls"]
    nic = max(calls["net_io_counters:pernic"][0],
              key=lambda n: calls["net_io_counters:pernic"][0][n]["bytes_recv"])
    disk = max(calls["disk_io_counters:perdisk"][0],
               key=lambda d: calls["disk_io_counters:perdisk"][0][d]["read_bytes"])
    for tick in range(4):
        c, n, d = by_key(cpu.collect()), by_key(net.collect()), by_key(dio.collect())
        pct = {k: v for k, v in c.items() if k[0] == "system_cpu_usage_percent"}
        if tick == 2:  # cpu times went back: no percentage rather than a negative or wild one
            assert pct == {}
        else:
            assert pct and all(0.0 <= v <= 100.0 for v in pct.values())
        for (name, labels), v in list(n.items()) + list(d.items()):
            assert v >= 0, (tick, name, labels, v)
        nics = calls["net_io_counters:pernic"][tick]
        assert n[("system_network_received_bytes_total", (("interface", nic),))] == \
            pytest.approx(nics[nic]["bytes_recv"])  # passed through; readers see the reset
        disks = calls["disk_io_counters:perdisk"][tick]
        assert d[("system_disk_read_bytes_total", (("device", disk),))] == \
            pytest.approx(disks[disk]["read_bytes"])
    # 32-bit kernel wraps are psutil's to fold: the collectors must ask for it.
    assert all(kw.get("nowrap") is True for kw in rec.kwargs["net_io_counters"])
    assert all(kw.get("nowrap") is True for kw in rec.kwargs["disk_io_counters"])


def test_diskio_skips_loop_ram_and_partitions() -> None:
    devices = {lab[0][1] for _, lab, _ in DiskIOCollector(Recorded("baseline")).collect()}
    recorded = set(Recorded("baseline").data["calls"]["disk_io_counters:perdisk"][0])
    assert devices == {d for d in recorded if not re.match(r"(loop|z?ram)\d+$", d)}
    assert devices and devices != recorded  # this machine has loop and zram devices to skip
    every = {lab[0][1] for _, lab, _ in
             DiskIOCollector(Recorded("baseline"), device_exclude=r"^$").collect()}
    assert every == recorded


def test_vanished_interface_is_omitted_not_zero() -> None:
    rec = Recorded("vanished_interface")
    gone = rec.data["_vanished"]
    net = NetworkCollector(rec)
    per_tick = [{lab[0][1] for _, lab, _ in net.collect()} for _ in range(3)]
    assert gone in per_tick[0] and gone not in per_tick[1] and gone in per_tick[2]
    assert per_tick[1] == per_tick[0] - {gone}
    assert len(net.collect()) == 8 * len(per_tick[0])


def test_network_interface_cap_and_exclude() -> None:
    rec = Recorded("baseline")
    nics = sorted(rec.data["calls"]["net_io_counters:pernic"][0])
    assert len(nics) >= 2
    got = NetworkCollector(rec, interface_exclude=f"^{re.escape(nics[0])}$",
                           max_interfaces=1).collect()
    assert {lab for _, lab, _ in got} == {(("interface", nics[1]),)}


def test_missing_mount_pseudo_filesystems_and_bind_mounts() -> None:
    rec = Recorded("missing_mount")
    disk = DiskUsageCollector(rec)
    got = by_key(disk.collect())
    mounts = {lab[0][1] for _, lab in got}
    assert mounts == set(rec.data["_expect_mounts"])  # /mnt/gone failed statvfs: omitted
    assert "/mnt/gone" in disk.mounts()
    usage = rec.data["calls"]["disk_usage:/"][-1]
    assert got[("system_disk_usage_percent", (("mount", "/"),))] == usage["percent"]
    assert got[("system_disk_total_bytes", (("mount", "/"),))] == usage["total"]


def test_root_reported_even_when_not_listed() -> None:
    class OverlayRoot:  # a container: psutil(all=False) hides the overlay root
        def disk_partitions(self, all: bool = False) -> list[Any]:
            return []

        def disk_usage(self, path: str) -> Any:
            return psutil.disk_usage(path)

    got = DiskUsageCollector(OverlayRoot()).collect()
    assert {lab for _, lab, _ in got} == {(("mount", "/"),)}


def test_long_mount_label_is_bounded() -> None:
    long_mount = "/mnt/" + "x" * 400
    part = collections.namedtuple("sdiskpart", "device mountpoint fstype opts")

    class Src:
        def disk_partitions(self, all: bool = False) -> list[Any]:
            return [part("/dev/vdz", long_mount, "ext4", "rw")]

        def disk_usage(self, path: str) -> Any:
            return psutil.disk_usage("/")

    labels = {lab for _, lab, _ in DiskUsageCollector(Src()).collect()}
    assert all(len(v) <= MAX_LABEL_VALUE_LEN for lab in labels for _, v in lab)
    assert len(labels) == 2


def test_mount_list_is_reread_after_refresh_secs_only() -> None:
    """The mount list is cached (issue 17: listing costs more than statvfs); a new mount shows up
    once `refresh_secs` passed, never sooner."""
    part = collections.namedtuple("sdiskpart", "device mountpoint fstype opts")

    class Src:
        parts = [part("/dev/vda1", "/", "ext4", "rw")]
        listed = 0

        def disk_partitions(self, all: bool = False) -> list[Any]:
            self.listed += 1
            return list(self.parts)

        def disk_usage(self, path: str) -> Any:
            return psutil.disk_usage("/")

    def mounts(c: DiskUsageCollector) -> set[str]:
        return {lab[0][1] for _, lab, _ in c.collect()}

    src = Src()
    cached, fresh = DiskUsageCollector(src, refresh_secs=3600), DiskUsageCollector(src,
                                                                                  refresh_secs=0)
    assert mounts(cached) == mounts(fresh) == {"/"}
    src.parts.append(part("/dev/vdb1", "/data", "ext4", "rw"))
    assert mounts(cached) == {"/"}
    assert mounts(fresh) == {"/", "/data"}
    assert src.listed == 3  # cached: once; fresh: every tick


def test_memory_without_swap() -> None:
    rec = Recorded("baseline")
    got = by_key(MemoryCollector(rec).collect())
    vm = rec.data["calls"]["virtual_memory"][0]
    assert got[("system_memory_usage_percent", ())] == vm["percent"]
    assert got[("system_memory_available_bytes", ())] == vm["available"]
    if rec.data["calls"]["swap_memory"][0]["total"] == 0:
        assert ("system_swap_usage_percent", ()) not in got  # undefined, not 0
        assert got[("system_swap_total_bytes", ())] == 0.0


def test_load_processes_uptime_from_recording() -> None:
    rec = Recorded("baseline")
    calls = rec.data["calls"]
    assert by_key(LoadCollector(rec).collect())[("system_load5", ())] == calls["getloadavg"][0][1]
    assert ProcessCollector(rec).collect() == [("system_processes", (), len(calls["pids"][0]))]
    boot = calls["boot_time"][0]
    up = by_key(UptimeCollector(rec, wall_clock=lambda: boot + 42.0).collect())
    assert up[("system_uptime_seconds", ())] == 42.0
    before_boot = UptimeCollector(rec, wall_clock=lambda: boot - 5.0).collect()
    assert [n for n, _, _ in before_boot] == ["system_boot_time_seconds"]


def test_load_unavailable_without_getloadavg() -> None:
    with pytest.raises(CollectorUnavailable):
        LoadCollector(object())


# ---- GPU against a fake NVML -------------------------------------------------------------------
class FakeNvml:
    """The slice of pynvml's API the collector uses. A fake because no GPU exists here."""

    NVML_TEMPERATURE_GPU = 0
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_GPU_IS_LOST = 15

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            self.value = value
            super().__init__(f"NVML error {value}")

    Util = collections.namedtuple("Util", "gpu memory")
    Mem = collections.namedtuple("Mem", "total free used")

    def __init__(self, gpus: int = 2, init_error: int | None = None,
                 lost: bool = False) -> None:
        self.gpus, self.init_error, self.lost = gpus, init_error, lost
        self.bad: set[int] = set()
        self.inits = self.shutdowns = 0

    def _check(self, h: int) -> None:
        if self.lost:
            raise self.NVMLError(self.NVML_ERROR_GPU_IS_LOST)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if i in self.bad:
            raise self.NVMLError(self.NVML_ERROR_GPU_IS_LOST)
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes | str:
        return b"NVIDIA H100 80GB HBM3" if h == 0 else "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        self._check(h)
        return self.Util(gpu=87 + h, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        self._check(h)
        return self.Mem(total=85_520_809_984, free=85_520_809_984 - 2**30, used=2**30)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        self._check(h)
        assert sensor == self.NVML_TEMPERATURE_GPU
        return 51

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._check(h)
        if h == 1:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return 312_456  # milliwatts

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        self._check(h)
        return 9_000_000  # millijoules


def test_gpu_readings_per_device() -> None:
    nvml = FakeNvml()
    gpu = GpuCollector(nvml)
    assert gpu.gpu_count == 2
    got = by_key(gpu.collect())
    g0 = (("gpu", "0"), ("name", "NVIDIA H100 80GB HBM3"))
    g1 = (("gpu", "1"), ("name", "NVIDIA H100 80GB HBM3"))
    assert got[("system_gpu_utilization_percent", g0)] == 87.0
    assert got[("system_gpu_utilization_percent", g1)] == 88.0
    assert got[("system_gpu_memory_used_bytes", g0)] == 2.0**30
    assert got[("system_gpu_memory_total_bytes", g1)] == 85_520_809_984.0
    assert got[("system_gpu_temperature_celsius", g0)] == 51.0
    assert got[("system_gpu_power_watts", g0)] == pytest.approx(312.456)
    assert ("system_gpu_power_watts", g1) not in got  # not supported: omitted, never 0
    assert got[("system_gpu_energy_joules_total", g1)] == 9000.0
    for (name, labels), value in got.items():
        _check_reading(name, labels, value)
    gpu.close()
    gpu.close()
    assert nvml.shutdowns == 1


@pytest.mark.parametrize("nvml", [FakeNvml(init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND),
                                  FakeNvml(gpus=0)], ids=["no-driver", "no-gpu"])
def test_gpu_unavailable(nvml: FakeNvml, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(CollectorUnavailable):
        GpuCollector(nvml)
    assert nvml.shutdowns == nvml.inits  # nothing left open
    with caplog.at_level(logging.INFO, logger="legion.node_agent.collectors"):
        built = available_collectors(table={"gpu": lambda: GpuCollector(nvml),
                                        "load": LoadCollector})
    assert [c.name for c in built] == ["load"]
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.INFO


def test_gpu_with_a_broken_device_reads_the_others() -> None:
    nvml = FakeNvml(gpus=3)
    nvml.bad = {1}
    gpu = GpuCollector(nvml)
    assert gpu.gpu_count == 2
    assert {dict(lab)["gpu"] for _, lab, _ in gpu.collect()} == {"0", "2"}


def test_gpu_lost_raises_collector_error() -> None:
    nvml = FakeNvml(gpus=1)
    gpu = GpuCollector(nvml)
    nvml.lost = True
    with pytest.raises(CollectorError):
        gpu.collect()
