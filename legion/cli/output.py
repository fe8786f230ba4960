"""Rendering of listings as table, JSON or CSV (every listing verb offers all three)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import click

FORMATS = ("table", "json", "csv")

format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
    help="Output format.")


def render(rows: Sequence[dict[str, Any]] | dict[str, Any], fmt: str,
           columns: Sequence[str] | None = None) -> str:
    """Render rows (or one object) in the requested format."""
    if fmt == "json":
        return json.dumps(rows, indent=2, sort_keys=False, default=str)
    if isinstance(rows, dict):
        rows = [{"key": k, "value": _cell(v)} for k, v in _flatten(rows)]
    cols = list(columns or _columns(rows))
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in cols])
        return buf.getvalue().rstrip("\n")
    if not rows:
        return "(none)"
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in obj.items():
        if isinstance(v, dict) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:  # counters, bytes: every digit, no exponent
            return str(int(v))
        return f"{v:.1f}" if 1e6 <= abs(v) < 1e15 else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)
