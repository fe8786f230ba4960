"""bench/gutentag_corpus.py's own rules (NAB's windows, anomalies placed after the probation),
checked without GutenTAG itself: the generator is a bench dependency, not a product one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import gutentag_corpus as gc  # noqa: E402


def test_windows_follow_nabs_rule() -> None:
    labels = np.zeros(gc.ROWS, dtype=bool)
    labels[1000:1010] = True
    labels[3000] = True
    half = int(0.1 * gc.ROWS / 2) // 2          # 10 % of the rows shared by two, centred
    assert gc.windows(labels) == [(1000 - half, 1000 + half), (3000 - half, 3000 + half)]
    long = np.zeros(gc.ROWS, dtype=bool)
    long[2000:2301] = True                      # longer than half a window: stretched to its end
    assert gc.windows(long) == [(2000 - int(0.1 * gc.ROWS) // 2, 2300)]
    assert gc.windows(np.zeros(gc.ROWS, dtype=bool)) == []


def test_anomalies_are_placed_after_the_probation_and_apart() -> None:
    rng = np.random.default_rng(0)
    for count in (1, 2, 3):
        lengths = [int(n) for n in rng.integers(1, 145, count)]
        starts = gc.place(count, lengths, rng)
        width = int(0.1 * gc.ROWS / count)
        assert starts == sorted(starts) and len(starts) == count
        assert starts[0] >= 0.2 * gc.ROWS and starts[-1] + width <= gc.ROWS
        assert all(b - a >= width + n for a, b, n in zip(starts, starts[1:], lengths, strict=False))

