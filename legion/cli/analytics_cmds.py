"""Offline analytics verbs: `legionctl detect FILE.csv` and `legionctl forecast-csv FILE.csv`.

    legionctl detect data.csv --detector ensemble --format csv > scored.csv
    legionctl forecast-csv data.csv --horizon 72 --model auto
    legionctl analytics run --config monitoring_config.json --workers 2

Input: a CSV with `timestamp,value` (a header row, ISO timestamps or epoch seconds/ms). `detect`
writes every input row with its causal anomaly score (fresh detector state per file); with
`--step SECS` it scores the max (`--agg min`: the min) of each epoch-aligned bucket instead, one
row per bucket stamped at its start, as the live path does (`analytics.detect_step_secs`). A
progress bar goes to stderr for long files. `forecast-csv` writes the forecast path with its
80 % interval.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from legion.cli.common import api, config_option, token_option

DEFAULT_DETECTOR = "ensemble"
PROGRESS_MIN_ROWS = 5000

# click >= 8.4 types ParamType by the value it converts to; older click has no subscript at runtime.
if TYPE_CHECKING:
    _StrParamType = click.ParamType[str]
else:
    _StrParamType = click.ParamType


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


class _TableChoice(_StrParamType):
    """A name from a registry table, loaded when the option is used (not at `legionctl` start:
    the detectors pull in numpy and scikit-learn, which every other command can do without)."""

    name = "name"

    def __init__(self, load: Callable[[], list[str]]) -> None:
        self._load = load

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        names = self._load()
        if value not in names:
            self.fail(f"{value!r} is not one of: {', '.join(names)}", param, ctx)
        return str(value)


def _detector_names() -> list[str]:
    from legion.analytics.detectors import DETECTORS

    return list(DETECTORS)


@click.command("detect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--detector", "detector", default=DEFAULT_DETECTOR, show_default=True,
              type=_TableChoice(_detector_names), help="Detector from the DETECTORS table.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="-",
              help="Output file (default stdout).")
@click.option("--step", "step_s", type=click.IntRange(min=1), default=None, metavar="SECS",
              help="Score the max of each SECS-second bucket (one row per bucket, stamped at "
                   "its start), as the live path does; default: every row.")
@click.option("--agg", type=click.Choice(["max", "min"]), default=None,
              help="With --step: each bucket's max (the default), or its min for a series "
                   "where low is bad (a success rate).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: on for long files on a terminal).")
def detect(file: str, detector: str, fmt: str, output: str, step_s: int | None,
           agg: str | None, progress: bool | None) -> None:
    """Score FILE (timestamp,value) causally; write timestamp,value,anomaly_score."""
    from legion.analytics.buckets import bucket_extreme
    from legion.analytics.config import AnalyticsConfig
    from legion.analytics.csvio import read_csv
    from legion.analytics.detectors import make_detector

    if agg is not None and step_s is None:
        raise click.UsageError("--agg needs --step: without it every row is scored")
    raw_ts, ts, vals = read_csv(file)
    if step_s is not None:
        ts, vals = bucket_extreme(ts, vals, step_s * 1000, agg or "max")
        raw_ts = [_iso(int(t)) for t in ts]
    else:
        _hint_fine_rows(ts, AnalyticsConfig().detect_step_secs)
    det = make_detector(detector)
    show = progress if progress is not None else (
        len(vals) >= PROGRESS_MIN_ROWS and sys.stderr.isatty())
    if show:
        with click.progressbar(length=len(vals), label=f"{detector}", file=sys.stderr) as bar:
            scores = det.score(ts, vals, progress=bar.update)
    else:
        scores = det.score(ts, vals)
    with click.open_file(output, "w") as fh:
        if fmt == "json":
            rows = [{"timestamp": t, "value": float(v), "anomaly_score": round(float(s), 6)}
                    for t, v, s in zip(raw_ts, vals, scores, strict=False)]
            json.dump(rows, fh, indent=1)
            fh.write("\n")
            return
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "value", "anomaly_score"])
        for t, v, s in zip(raw_ts, vals, scores, strict=False):
            w.writerow([t, _num(v), f"{float(s):.6f}"])


def _hint_fine_rows(ts: Any, live_step_s: float) -> None:
    """One line on stderr when rows are finer than half the live path's step: every row
    constant of the detectors (history, debounce, periods) counts 5-minute rows."""
    import numpy as np

    if len(ts) < 2:
        return
    step_s = float(np.median(np.diff(ts))) / 1000
    if 0 < step_s < live_step_s / 2:
        click.echo(f"note: rows are {step_s:g} s apart; the detectors' time scales count "
                   f"{live_step_s:g} s rows (the live path scores {live_step_s:g} s maxima): "
                   f"--step {live_step_s:g} scores those", err=True)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def _forecaster_names() -> list[str]:
    from legion.analytics.forecasters import FORECASTERS

    return list(FORECASTERS)


@click.command("forecast-csv")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--horizon", "-H", type=click.IntRange(1, 100_000), required=True,
              help="Steps ahead (at the series' median step).")
@click.option("--model", default="auto", show_default=True,
              type=_TableChoice(_forecaster_names), help="Forecaster (auto = backtest).")
@click.option("--threshold", type=float, default=None,
              help="Also report when the forecast crosses this value.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True, help="Output format.")
def forecast_csv(file: str, horizon: int, model: str, threshold: float | None,
                 fmt: str) -> None:
    """Forecast FILE (timestamp,value) HORIZON steps ahead with an 80 % interval."""
    from legion.analytics.csvio import read_csv
    from legion.analytics.forecasters import (
        TORCH_NOTE,
        AutoForecaster,
        make_forecaster,
        time_to_threshold,
    )

    if TORCH_NOTE:
        click.echo(TORCH_NOTE, err=True)
    _, ts, vals = read_csv(file)
    if len(vals) < 2:
        raise click.ClickException("need at least two rows to forecast")
    fc_model: Any = AutoForecaster(horizon=horizon) if model == "auto" else make_forecaster(model)
    fc = fc_model.fit(ts, vals).predict(horizon)
    chosen = fc.model
    eta = time_to_threshold(fc, threshold) if threshold is not None else None
    if fmt == "json":
        out: dict[str, Any] = {"model": chosen, "horizon": horizon, "forecast": [
            {"timestamp": _iso(r["ts_ms"]), **r} for r in fc.rows()]}
        if eta is not None:
            out["threshold"] = {"value": threshold, "eta_ms": eta.eta_ms,
                                "earliest_ms": eta.earliest_ms, "latest_ms": eta.latest_ms,
                                "text": eta.describe(int(ts[-1]))}
        click.echo(json.dumps(out, indent=1))
        return
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["timestamp", "forecast", "lower_80", "upper_80", "model"])
    for r in fc.rows():
        w.writerow([_iso(r["ts_ms"]), f"{r['mean']:.6g}", f"{r['lower']:.6g}",
                    f"{r['upper']:.6g}", chosen])
    sys.stdout.flush()
    if eta is not None:
        click.echo(f"{chosen}: {eta.describe(int(ts[-1]))}", err=True)


@click.group("analytics")
def analytics() -> None:
    """Analytics worker pool."""


@analytics.command("retrain")
@click.option("--series", default=None,
              help="One series key (node|metric|labels); default: every series.")
@config_option
@token_option
def analytics_retrain(series: str | None, config_path: str, token: str | None) -> None:
    """Retrain anomaly models now (on their next detect job) instead of waiting for the interval."""
    answer = api(config_path, token).request(
        "POST", "/api/v1/analytics/retrain" + (f"?series={quote(series)}" if series else ""))
    click.echo(f"retrain requested for {answer['retrain']} ({answer['when']})")


@analytics.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Path to monitoring_config.json (default: $LEGION_CONFIG or ./).")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Worker processes (default: analytics.workers from the config).")
def analytics_run(config_path: str | None, workers: int | None) -> None:
    """Run N analytics workers: PULL jobs from the aggregator, PUSH results (CurveZMQ)."""
    from legion.analytics.worker import run_pool
    from legion.cli.common import load
    from legion.kernel.config import default_config_path

    path = config_path or default_config_path()
    cfg = load(path)
    if not cfg.ai_settings.anomaly_detection_enabled and \
            not cfg.ai_settings.predictive_analytics_enabled:
        click.echo("analytics disabled in ai_settings; no workers started", err=True)
        return
    n = workers or max(1, cfg.analytics.workers)
    click.echo(f"analytics: starting {n} worker{'s' * (n > 1)} (Ctrl-C stops)", err=True)
    run_pool(cfg.worker_settings(), n)  # logs event=started with the endpoints once the workers run
    click.echo("analytics: stopped", err=True)


COMMANDS = [detect, forecast_csv, analytics]
