"""`detect` and `forecast-csv` through click's CliRunner and as a real `legionctl` subprocess."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from legion.cli.analytics_cmds import COMMANDS, detect, forecast_csv

SeriesFactory = Callable[..., Any]


def write_csv(path: Path, make_series: SeriesFactory, n: int = 700) -> Path:
    ts, v = make_series(n)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for t, x in zip(ts, v, strict=False):
            w.writerow([np.datetime_as_string(np.datetime64(int(t), "ms"), unit="s")
                        .replace("T", " "), f"{x:.4f}"])
    return path


def test_commands_are_exported() -> None:
    assert {c.name for c in COMMANDS} == {"detect", "forecast-csv", "analytics"}


@pytest.mark.parametrize("name", ["mad", "ensemble"])
def test_detect_round_trip(tmp_path: Path, name: str, series_factory: SeriesFactory) -> None:
    src = write_csv(tmp_path / "in.csv", series_factory)
    res = CliRunner().invoke(detect, [str(src), "--detector", name, "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.reader(io.StringIO(res.output)))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    inp = list(csv.reader(src.open()))
    assert [r[0] for r in rows[1:]] == [r[0] for r in inp[1:]]        # same rows, same order
    assert [float(r[1]) for r in rows[1:]] == [float(r[1]) for r in inp[1:]]
    scores = np.array([float(r[2]) for r in rows[1:]])
    assert scores.min() >= 0 and scores.max() <= 1
    # Fresh state per file: running it twice gives the same output.
    again = CliRunner().invoke(detect, [str(src), "--detector", name, "--format", "csv"])
    assert again.output == res.output


def test_detect_json_and_progress(tmp_path: Path, series_factory: SeriesFactory) -> None:
    src = write_csv(tmp_path / "in.csv", series_factory)
    res = CliRunner().invoke(detect, [str(src), "--detector", "mad", "--format", "json",
                                      "--progress"])
    assert res.exit_code == 0, res.output
    start = res.output.index("[")
    rows = json.loads(res.output[start:])
    assert len(rows) == 700 and set(rows[0]) == {"timestamp", "value", "anomaly_score"}


def fine_series(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """2.5 days every 10 s (epoch seconds): a daily cycle and noise, and a 3-minute fault."""
    rng = np.random.default_rng(3)
    ts = 1_700_000_000_000 + np.arange(0, int(2.5 * 86400), 10, dtype=np.int64) * 1000
    v = 50 + 10 * np.sin(2 * np.pi * (ts - ts[0]) / 86_400_000) + rng.normal(0, 2, len(ts))
    fault = int(np.searchsorted(ts, ts[0] + 2 * 86_400_000))
    v[fault:fault + 18] += 40
    path.write_text("timestamp,value\n" + "".join(
        f"{t // 1000},{x:.3f}\n" for t, x in zip(ts.tolist(), v.tolist(), strict=True)))
    return ts, np.round(v, 3), int(ts[fault])


def test_detect_step_scores_bucket_maxima_as_the_live_path(tmp_path: Path) -> None:
    src = tmp_path / "fine.csv"
    ts, v, fault_ms = fine_series(src)
    raw = CliRunner().invoke(detect, [str(src)])
    assert raw.exit_code == 0, raw.output
    assert "--step 300" in raw.stderr  # rows 30 times finer than the detectors' time scale
    res = CliRunner().invoke(detect, [str(src), "--step", "300"])
    assert res.exit_code == 0, res.output
    assert res.stderr == ""
    rows = list(csv.reader(io.StringIO(res.stdout)))[1:]
    step = 300_000
    starts = sorted({t - t % step for t in ts.tolist()})
    assert [r[0] for r in rows] == [
        np.datetime_as_string(np.datetime64(s, "ms"), unit="s").replace("T", " ") for s in starts]
    assert [float(r[1]) for r in rows] == [float(v[(ts >= s) & (ts < s + step)].max())
                                           for s in starts]
    scores = np.array([float(r[2]) for r in rows])
    fault_bucket = starts.index(fault_ms - fault_ms % step)
    assert scores[fault_bucket] >= 0.8
    raw_scores = np.array([float(r[2]) for r in list(csv.reader(io.StringIO(raw.stdout)))[1:]])
    quiet_raw = raw_scores[(ts < fault_ms - step) | (ts > fault_ms + 2 * step)]
    quiet = np.delete(scores, range(fault_bucket - 1, fault_bucket + 3))
    # The same 0.8 means far fewer false alarms on the rows the detectors were built for.
    assert (quiet >= 0.8).sum() * 5 < (quiet_raw >= 0.8).sum()
    low = CliRunner().invoke(detect, [str(src), "--step", "300", "--agg", "min"])
    assert [float(r[1]) for r in list(csv.reader(io.StringIO(low.stdout)))[1:]] == [
        float(v[(ts >= s) & (ts < s + step)].min()) for s in starts]
    alone = CliRunner().invoke(detect, [str(src), "--agg", "min"])
    assert alone.exit_code == 2 and "--agg needs --step" in alone.output


def test_no_step_hint_for_five_minute_rows(tmp_path: Path, series_factory: SeriesFactory
                                           ) -> None:
    res = CliRunner().invoke(detect, [str(write_csv(tmp_path / "in.csv", series_factory))])
    assert res.exit_code == 0 and res.stderr == ""


def test_detect_bad_input_is_an_error(tmp_path: Path, series_factory: SeriesFactory) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2024-01-01 00:00:00,abc\n")
    res = CliRunner().invoke(detect, [str(bad)])
    assert res.exit_code != 0
    res = CliRunner().invoke(detect, [str(bad), "--detector", "nope"])
    assert res.exit_code == 2


def test_forecast_csv(tmp_path: Path, series_factory: SeriesFactory) -> None:
    src = write_csv(tmp_path / "in.csv", series_factory)
    res = CliRunner().invoke(forecast_csv, [str(src), "--horizon", "12", "--model", "profile",
                                            "--threshold", "1000"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln and not ln.startswith("profile:")]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    assert rows[0] == ["timestamp", "forecast", "lower_80", "upper_80", "model"]
    assert len(rows) == 13
    for r in rows[1:]:
        assert float(r[2]) <= float(r[1]) <= float(r[3])
    res = CliRunner().invoke(forecast_csv, [str(src), "-H", "6", "--format", "json"])
    out = json.loads(res.output[res.output.index("{"):])
    assert len(out["forecast"]) == 6 and out["model"]


def test_legionctl_subprocess(tmp_path: Path, series_factory: SeriesFactory) -> None:
    src = write_csv(tmp_path / "in.csv", series_factory, 400)
    out = subprocess.run(
        [sys.executable, "-m", "legion.cli", "detect", str(src),
         "--detector", "mad", "--format", "csv"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "timestamp,value,anomaly_score"
    assert len(out.stdout.splitlines()) == 401
