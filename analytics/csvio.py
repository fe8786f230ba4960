"""Reading `timestamp,value` CSV files (NAB layout) into millisecond timestamps and floats."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from legion.errors import LegionError


class DataError(LegionError):
    """An input file could not be read as timestamp,value rows."""


def parse_ts(text: str) -> int:
    """ISO-ish timestamp (naive = UTC) or epoch seconds/ms to integer ms."""
    t = text.strip()
    try:
        x = float(t)
    except ValueError:
        pass
    else:
        return int(x if x > 1e11 else x * 1000)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DataError(f"bad timestamp {text!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


def read_csv(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(original timestamp strings, ts_ms array, values array) of a timestamp,value CSV."""
    raw: list[str] = []
    ts: list[int] = []
    vals: list[float] = []
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return [], np.zeros(0, np.int64), np.zeros(0)
            cols = [h.strip().lower() for h in header]
            rows: Iterator[list[str]]
            if "timestamp" in cols and "value" in cols:
                it, iv = cols.index("timestamp"), cols.index("value")
                rows = reader
            else:  # no header: first row is data
                it, iv = 0, 1
                rows = iter([header, *reader])
            for lineno, row in enumerate(rows, start=2):
                if not row:
                    continue
                try:
                    v = float(row[iv])
                except (ValueError, IndexError) as exc:
                    raise DataError(f"{path}:{lineno}: bad value in {row!r}") from exc
                raw.append(row[it])
                ts.append(parse_ts(row[it]))
                vals.append(v)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return raw, np.asarray(ts, dtype=np.int64), np.asarray(vals, dtype=float)
