"""Check the GPU collector on a real NVIDIA host: 3 ticks of readings printed as JSON.

Usage: `python bench/gpu_check.py [--ticks 3] [--interval 1.0]`

Exit status: 0 when readings were collected, or when NVML is absent (nothing to check, said on
stderr); 1 when NVML is present but the collector produced nothing; 2 when NVML is present and
the collector raised.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time

from legion.node_agent.collectors import CollectorUnavailable, GpuCollector
from legion.node_agent.collectors.gpu import _load_nvml


def _nvml_present() -> bool:
    """Whether pynvml imports and nvmlInit succeeds (a driver is loaded)."""
    if importlib.util.find_spec("pynvml") is None:
        return False
    nvml = _load_nvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return False
    nvml.nvmlShutdown()
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=3)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args(argv)

    present = _nvml_present()
    try:
        gpu = GpuCollector()
    except CollectorUnavailable as exc:
        print(json.dumps({"nvml_present": present, "unavailable": str(exc)}))
        return 1 if present else 0
    ticks = []
    failed = None
    try:
        for i in range(args.ticks):
            if i:
                time.sleep(args.interval)
            t0 = time.perf_counter()
            try:
                readings = gpu.collect()
            except Exception as exc:  # noqa: BLE001 - report whatever went wrong
                failed = f"{type(exc).__name__}: {exc}"
                break
            ticks.append({
                "tick": i, "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
                "readings": [{"name": n, "labels": dict(lab), "value": v}
                             for n, lab, v in readings],
            })
    finally:
        gpu.close()
    count = sum(len(t["readings"]) for t in ticks)
    print(json.dumps({"nvml_present": present, "gpus": gpu.gpu_count, "ticks": ticks,
                      "error": failed, "readings_total": count}, indent=1))
    if failed:
        return 2
    return 0 if count > 0 and all(t["readings"] for t in ticks) else 1


if __name__ == "__main__":
    sys.exit(main())
