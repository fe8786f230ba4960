"""Shared synthetic series for the analytics tests (no NAB files: they are for bench/ only)."""

from __future__ import annotations

import numpy as np
import pytest

STEP_MS = 300_000
T0_MS = 1_600_000_000_000


def make_series(n: int = 700, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A 4-hour cycle plus noise, with a spike at 500 and a level shift from 650."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = 50 + 10 * np.sin(2 * np.pi * t / 48) + rng.normal(0, 1, n)
    if n > 500:
        v[500] += 25
    v[650:] += 15
    return T0_MS + t.astype(np.int64) * STEP_MS, v


@pytest.fixture()
def series() -> tuple[np.ndarray, np.ndarray]:
    """A 700-point synthetic series with two anomalies."""
    return make_series()


@pytest.fixture()
def series_factory():  # type: ignore[no-untyped-def]
    """`make_series` itself, for tests that need other lengths."""
    return make_series
