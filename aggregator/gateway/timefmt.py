"""Time helpers for the API: ISO 8601 output, and parsing of `since`/`until`/`step` values."""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# Plausible epoch-ms range: 2000-01-01 .. 2200-01-01.
_MIN_MS, _MAX_MS = 946_684_800_000, 7_258_118_400_000


def now_ms() -> int:
    """Current wall-clock time in integer milliseconds."""
    return int(time.time() * 1000)


def iso_ms(ts_ms: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds and a `Z`, or None."""
    if ts_ms is None:
        return None
    return _iso(int(ts_ms))


@functools.lru_cache(maxsize=1 << 14)
def _iso(ts_ms: int) -> str:
    # Remembered: query answers repeat the same bucket times (a tenth of formatting's cost).
    s, ms = divmod(ts_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{ms:03d}Z"


def parse_duration_ms(text: str) -> int:
    """`90s`, `5m`, `1h`, `2d`, `1w`, `250ms` or a plain integer of ms -> ms; ValueError if bad."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 5m, 1h, 2d or ms)")
    ms = int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    if ms > _MAX_MS - _MIN_MS:
        raise ValueError(f"{text!r} is longer than this century")
    return ms


def parse_time_ms(text: str, now: int | None = None) -> int:
    """A point in time: epoch ms, ISO 8601, `now`, or a duration meaning that long ago."""
    text = text.strip()
    now = now_ms() if now is None else now
    if text == "now":
        return now
    if text.lstrip("-").isdigit():
        v = int(text) if len(text) < 20 else -1
        if not _MIN_MS <= v <= _MAX_MS:
            raise ValueError(f"{text!r}: epoch milliseconds out of range")
        return v
    if _DURATION_RE.match(text):
        v = now - parse_duration_ms(text)
        if v < _MIN_MS:
            raise ValueError(f"{text!r} ago is before 2000-01-01")
        return v
    try:
        if "T" in text and " " in text:  # a '+' of an offset that was URL-decoded to ' '
            head, _, tail = text.rpartition(" ")
            text = f"{head}+{tail}"
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time (epoch ms, ISO 8601, or a duration like 5m "
                         "meaning 5 minutes ago)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    v = int(dt.timestamp() * 1000)
    if not _MIN_MS <= v <= _MAX_MS:
        raise ValueError(f"{text!r}: outside 2000-01-01 .. 2200-01-01")
    return v
