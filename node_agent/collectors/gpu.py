"""NVIDIA GPUs through NVML: utilization, memory, temperature and power per GPU.

`pynvml` (from nvidia-ml-py) is imported when the collector is built, never when this module is
imported. No library, no driver or no GPU raises `CollectorUnavailable` from the constructor, so
the agent says so once at start and does not schedule the collector.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from legion.node_agent.collectors._base import (
    CollectorError,
    CollectorUnavailable,
    Reading,
    add,
    label_value,
)
from legion.proto import Labels

MAX_GPUS = 64
_NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED, stable since the first NVML


def _load_nvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise CollectorUnavailable("pynvml is not installed (pip install legion-monitor[gpu])") \
            from exc


class GpuCollector:
    """Per GPU (labels `gpu` index and `name`): `system_gpu_utilization_percent`,
    `system_gpu_memory_utilization_percent`, `system_gpu_memory_used_bytes`,
    `system_gpu_memory_total_bytes`, `system_gpu_temperature_celsius`, `system_gpu_power_watts`,
    `system_gpu_energy_joules_total`. A reading the device does not support is omitted."""

    name = "gpu"

    def __init__(self, nvml: ModuleType | Any | None = None, max_gpus: int = MAX_GPUS) -> None:
        self._nvml = nvml if nvml is not None else _load_nvml()
        nv = self._nvml
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            raise CollectorUnavailable(f"NVML not usable: {exc}") from exc
        self._open = True
        try:
            count = int(nv.nvmlDeviceGetCount())
        except nv.NVMLError as exc:
            self.close()
            raise CollectorUnavailable(f"NVML cannot count GPUs: {exc}") from exc
        self._gpus: list[tuple[Any, Labels]] = []
        for i in range(min(count, max_gpus)):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(i)
            except nv.NVMLError:
                continue  # a GPU in a bad state (fallen off the bus): read the others
            self._gpus.append((handle, self._labels(i, handle)))
        if not self._gpus:
            self.close()
            raise CollectorUnavailable(f"NVML found no usable GPU (count {count})")

    @property
    def gpu_count(self) -> int:
        """How many GPUs this collector reads."""
        return len(self._gpus)

    def _labels(self, index: int, handle: Any) -> Labels:
        nv = self._nvml
        labels = {"gpu": str(index)}
        try:
            name = nv.nvmlDeviceGetName(handle)
            labels["name"] = label_value(name.decode() if isinstance(name, bytes) else name)
        except nv.NVMLError:
            pass  # the name is optional; the index identifies the series
        return tuple(sorted(labels.items()))

    def collect(self) -> list[Reading]:
        """Read every GPU; raise `CollectorError` only when NVML failed and nothing was read."""
        nv = self._nvml
        out: list[Reading] = []
        failures: list[BaseException] = []

        def read(fn: Callable[..., Any], *args: Any) -> Any:
            try:
                return fn(*args)
            except nv.NVMLError as exc:
                if getattr(exc, "value", None) != getattr(nv, "NVML_ERROR_NOT_SUPPORTED",
                                                          _NOT_SUPPORTED):
                    failures.append(exc)
                return None

        for handle, labels in self._gpus:
            util = read(nv.nvmlDeviceGetUtilizationRates, handle)
            if util is not None:
                add(out, "system_gpu_utilization_percent", labels, util.gpu)
                add(out, "system_gpu_memory_utilization_percent", labels, util.memory)
            mem = read(nv.nvmlDeviceGetMemoryInfo, handle)
            if mem is not None:
                add(out, "system_gpu_memory_used_bytes", labels, mem.used)
                add(out, "system_gpu_memory_total_bytes", labels, mem.total)
            temp = read(nv.nvmlDeviceGetTemperature, handle,
                        getattr(nv, "NVML_TEMPERATURE_GPU", 0))
            add(out, "system_gpu_temperature_celsius", labels, temp)
            milliwatts = read(nv.nvmlDeviceGetPowerUsage, handle)
            if milliwatts is not None:
                add(out, "system_gpu_power_watts", labels, milliwatts / 1000.0)
            millijoules = read(nv.nvmlDeviceGetTotalEnergyConsumption, handle)
            if millijoules is not None:
                add(out, "system_gpu_energy_joules_total", labels, millijoules / 1000.0)
        if not out and failures:
            raise CollectorError(f"NVML read failed: {failures[-1]}") from failures[-1]
        return out

    def close(self) -> None:
        """Release NVML (idempotent)."""
        if self._open:
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass  # shutting down: nothing left to do about it
