"""Forecast accuracy on the NAB CPU/cloud series: MASE of each forecaster vs seasonal-naive.

    python bench/forecast.py [--hours 3,6,12] [--every 576] [--no-mlp]
                             [--categories realAWSCloudwatch,realKnownCause,realTraffic]

Rolling origins every `--every` points after two days of history; each model is fitted on the
history up to the origin (labels are never used) and forecasts the next H hours. MASE = MAE over
the horizon / in-sample MAE of the one-day seasonal-naive forecast (Hyndman & Koehler). The table
prints mean MASE per model and horizon, and its ratio to seasonal-naive's (target <= 0.8).
The default file set is the CPU/cloud one the target is stated on; `--categories` runs the same
comparison on other NAB folders (the generalisation check for any forecaster change).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from legion.analytics.csvio import read_csv
from legion.analytics.forecasters import FORECASTERS, AutoForecaster
from legion.analytics.forecasters.base import daily_period, series_step

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"
CATEGORIES = ("realAWSCloudwatch",)


def mase_scale(y: np.ndarray, period: int) -> float:
    """In-sample MAE of the seasonal-naive one-step forecast (the MASE denominator)."""
    m = max(period, 1)
    d = np.abs(y[m:] - y[:-m])
    return float(np.mean(d)) if len(d) and np.mean(d) > 0 else 1.0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--hours", default="3,6,12")
    ap.add_argument("--every", type=int, default=576)
    ap.add_argument("--no-mlp", action="store_true")
    ap.add_argument("--categories", default=",".join(CATEGORIES),
                    help="comma-separated NAB data folders")
    a = ap.parse_args(argv)
    hours = [float(h) for h in a.hours.split(",")]
    models = [m for m in FORECASTERS if m != "auto" and not (a.no_mlp and m == "mlp")]
    cats = [c for c in a.categories.split(",") if c]
    files = sorted(p for c in cats for p in (a.root / "data" / c).glob("*.csv"))
    res: dict[tuple[str, float], list[float]] = {}
    secs: dict[str, float] = {}
    chosen: dict[str, int] = {}
    for path in files:
        _, ts, v = read_csv(path)
        step = series_step(ts)
        hs = {h: max(1, int(round(h * 3_600_000 / step))) for h in hours}
        hmax = max(hs.values())
        for origin in range(576, len(v) - hmax + 1, a.every):
            tr_ts, tr_v = ts[:origin], v[:origin]
            scale = mase_scale(tr_v, daily_period(tr_ts, len(tr_v)))
            truth = v[origin:origin + hmax]
            for m in models:
                t0 = time.perf_counter()
                fc = FORECASTERS[m]().fit(tr_ts, tr_v).predict(hmax)
                secs[m] = secs.get(m, 0.0) + time.perf_counter() - t0
                for h, n in hs.items():
                    res.setdefault((m, h), []).append(
                        float(np.mean(np.abs(fc.mean[:n] - truth[:n]))) / scale)
            for h, n in hs.items():
                t0 = time.perf_counter()
                auto = AutoForecaster(horizon=n).fit(tr_ts, tr_v)
                fc = auto.predict(n)
                secs["auto"] = secs.get("auto", 0.0) + time.perf_counter() - t0
                chosen[auto.chosen.name] = chosen.get(auto.chosen.name, 0) + 1
                res.setdefault(("auto", h), []).append(
                    float(np.mean(np.abs(fc.mean - truth[:n]))) / scale)
    names = models + ["auto"]
    print(f"NAB {', '.join(cats)}: {len(files)} series, rolling origins every "
          f"{a.every} points; mean MASE (ratio to seasonal-naive)")
    print(f"{'model':<16}" + "".join(f"{f'{h:g} h':>18}" for h in hours) + f"{'fit s':>8}")
    for m in names:
        cells = []
        for h in hours:
            x = float(np.mean(res[(m, h)]))
            base = float(np.mean(res[("seasonal_naive", h)]))
            cells.append(f"{x:8.3f} ({x / base:5.2f})")
        print(f"{m:<16}" + "".join(f"{c:>18}" for c in cells) + f"{secs.get(m, 0):8.1f}")
    print("auto chose: " + ", ".join(f"{k} x{v}" for k, v in sorted(chosen.items())))
    print(f"origins per horizon: {len(res[('seasonal_naive', hours[0])])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
