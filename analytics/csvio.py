"""Reading `timestamp,value` CSV files (NAB layout) into millisecond timestamps and floats."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from legion.kernel.errors import LegionError


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
    """(original timestamp strings, ts_ms array, values array) of a timestamp,value CSV.

    Raises `DataError` naming the file and line for: a file that is not text, no data rows,
    a bad timestamp or value, a NaN or infinite value, a timestamp earlier than the one before."""
    raw: list[str] = []
    ts: list[int] = []
    vals: list[float] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file (expected timestamp,value rows)")
            cols = [h.strip().lower() for h in header]
            rows: Iterator[list[str]]
            if "timestamp" in cols and "value" in cols:
                it, iv = cols.index("timestamp"), cols.index("value")
                rows, first = reader, 2
            else:  # no header: first row is data (line 1)
                it, iv = 0, 1
                rows, first = iter([header, *reader]), 1
            for lineno, row in enumerate(rows, start=first):
                if not row:
                    continue
                try:
                    v = float(row[iv])
                    t = parse_ts(row[it])
                except (ValueError, IndexError, DataError) as exc:
                    raise DataError(f"{path}:{lineno}: bad row {row!r}: {exc}") from None
                if not np.isfinite(v):
                    raise DataError(f"{path}:{lineno}: value {row[iv]!r} is not a finite number")
                if ts and t < ts[-1]:
                    raise DataError(f"{path}:{lineno}: timestamp {row[it]!r} is earlier than the "
                                    "one before (rows must be in time order)")
                raw.append(row[it])
                ts.append(t)
                vals.append(v)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file (expected timestamp,value rows)") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if not vals:
        raise DataError(f"{path}: no data rows (expected timestamp,value rows after the header)")
    return raw, np.asarray(ts, dtype=np.int64), np.asarray(vals, dtype=float)
