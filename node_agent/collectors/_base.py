"""Shared pieces of the collectors: the reading type, collector errors, label bounding."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from legion.kernel.errors import LegionError
from legion.proto import Labels
from legion.proto.limits import MAX_LABEL_VALUE_LEN

Reading = tuple[str, Labels, float]
"""One collected value: (metric name, canonical labels, value); the scheduler adds the time."""


class CollectorUnavailable(LegionError):
    """The collector's source does not exist on this host (no NVML, no GPU): do not schedule it."""


class CollectorError(LegionError):
    """A collector could not read its source this tick; the scheduler counts it by class name."""


def label_value(value: object) -> str:
    """Bound a label value to the wire limit (mount paths can be long)."""
    s = str(value)
    return s if len(s) <= MAX_LABEL_VALUE_LEN else s[:MAX_LABEL_VALUE_LEN]


class DeviceLabels:
    """The labels of each device or interface name, built once; excluded names are remembered
    as such, and names gone from a reading are forgotten (container hosts churn through names)."""

    def __init__(self, key: str, exclude: re.Pattern[str]) -> None:
        self._key, self._exclude = key, exclude
        self._known: dict[str, Labels | None] = {}

    def kept(self, names: Iterable[str]) -> list[tuple[str, Labels]]:
        """(name, labels) of the names not excluded, sorted by name."""
        known = self._known
        now = set(names)
        for gone in known.keys() - now:
            del known[gone]
        for new in now - known.keys():
            known[new] = None if self._exclude.search(new) else ((self._key, label_value(new)),)
        return sorted((n, lab) for n, lab in known.items() if lab is not None)


def add(out: list[Reading], name: str, labels: Labels, value: object) -> None:
    """Append a reading if `value` is a finite number; a missing reading is omitted, never 0."""
    if value is None or isinstance(value, bool):
        return
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return
    if math.isfinite(v):
        out.append((name, labels, v))
