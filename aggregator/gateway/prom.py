"""`/metrics` in Prometheus text format 0.0.4: self-metrics and, optionally, latest values."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")

Triple = tuple[str, Mapping[str, str] | Iterable[tuple[str, str]], float]
"""(metric name, labels, value): what a telemetry callable yields."""


def sanitize_name(name: str) -> str:
    """A valid Prometheus metric name."""
    name = _NAME_BAD.sub("_", name)
    return name if name and not name[0].isdigit() else "_" + name


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


def render(triples: Iterable[tuple[str, Mapping[str, str], float, int | None]]) -> str:
    """Render (name, labels, value, ts_ms|None) samples grouped into typed families."""
    families: dict[str, list[tuple[Mapping[str, str], float, int | None]]] = defaultdict(list)
    for name, labels, value, ts in triples:
        families[sanitize_name(name)].append((labels, value, ts))
    lines: list[str] = []
    for name in sorted(families):
        kind = "counter" if name.endswith("_total") else "gauge"
        lines.append(f"# TYPE {name} {kind}")
        seen: set[tuple[tuple[str, str], ...]] = set()
        for labels, value, ts in families[name]:
            key = tuple(sorted((_LABEL_BAD.sub("_", str(k)), str(v)) for k, v in labels.items()))
            if key in seen:
                continue  # duplicate series would make the whole scrape invalid
            seen.add(key)
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
            line = f"{name}{{{lab}}} {_fmt_value(value)}" if lab else f"{name} {_fmt_value(value)}"
            if ts is not None:
                line += f" {int(ts)}"
            lines.append(line)
    return "\n".join(lines) + "\n"


def flatten_status(status: Mapping[str, Any], prefix: str = "legion_aggregator"
                   ) -> list[tuple[str, dict[str, str], float, None]]:
    """Numeric leaves of a status dict as gauges; a dict of numbers becomes one labelled family."""
    out: list[tuple[str, dict[str, str], float, None]] = []
    for k, v in status.items():
        name = f"{prefix}_{k}"
        if isinstance(v, (bool, int, float)):
            out.append((name, {}, float(v), None))
        elif isinstance(v, Mapping):
            if v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                         for x in v.values()):
                out.extend((name, {"key": str(kk)}, float(x), None) for kk, x in v.items())
            else:
                out.extend(flatten_status(v, name))
    return out


def telemetry_samples(items: Iterable[Any]) -> list[tuple[str, dict[str, str], float, None]]:
    """Normalize telemetry: `(name, labels, value)` triples or `Sample`-like objects."""
    out = []
    for item in items:
        if hasattr(item, "name") and hasattr(item, "value"):
            name, labels, value = item.name, item.labels, item.value
        else:
            name, labels, value = item
        lab = dict(labels.items()) if isinstance(labels, Mapping) else dict(labels or ())
        out.append((str(name), {str(k): str(v) for k, v in lab.items()}, float(value), None))
    return out


def latest_samples(rows: Iterable[Mapping[str, Any]]
                   ) -> list[tuple[str, dict[str, str], float, int]]:
    """`Store.latest` rows as samples with a `node` label and their own timestamps."""
    out = []
    for r in rows:
        labels = {"node": str(r["node"]), **{str(k): str(v) for k, v in
                                            (r.get("labels") or {}).items() if k != "node"}}
        out.append((str(r["metric"]), labels, float(r["value"]), int(r["ts_ms"])))
    return out
