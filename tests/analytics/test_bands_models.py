"""Normal bands with daily seasonality, and the model-file format (no pickle, versioned)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from legion.analytics import models
from legion.analytics.bands import HOUR_MS, NormalBand


def test_band_follows_the_daily_cycle_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    ts = np.arange(0, 14 * 24 * HOUR_MS, 5 * 60_000, dtype=np.int64)
    hour = (ts // HOUR_MS) % 24
    v = np.where((hour >= 9) & (hour < 17), 80.0, 20.0) + rng.normal(0, 2, len(ts))
    band = NormalBand().fit(ts, v)
    lo, hi = band.limits(np.array([3 * HOUR_MS, 12 * HOUR_MS]))
    assert hi[0] < 40 < lo[1]                         # night band below the day band
    assert not band.outside(12 * HOUR_MS, 80.0)
    assert band.outside(3 * HOUR_MS, 80.0)           # 80 is normal at noon, not at 3 am
    rec = models.ModelRecord("band", "normal_band", {}, band.get_state(),
                             trained_from_ms=band.trained_from_ms,
                             trained_to_ms=band.trained_to_ms)
    back = NormalBand.from_state(models.loads(models.dumps(rec)).state)
    assert np.array_equal(back.low, band.low) and np.array_equal(back.high, band.high)


def test_model_file_header_and_errors(tmp_path: Path) -> None:
    rec = models.ModelRecord("detector", "mad", {"window": 10},
                             {"a": np.arange(3.0), "b": {"c": 1, "d": "x", "e": float("nan")},
                              "f": [1, 2], "g": None, "h": True},
                             version=7, trained_from_ms=1, trained_to_ms=2, score=0.5)
    p = models.save(tmp_path / "m" / "mad.npz", rec)
    back = models.load(p)
    assert (back.version, back.params, back.score) == (7, {"window": 10}, 0.5)
    st = back.state
    assert np.array_equal(st["a"], np.arange(3.0)) and st["b"]["c"] == 1 and st["b"]["d"] == "x"
    assert np.isnan(st["b"]["e"]) and list(st["f"]) == [1, 2] and st["g"] is None and st["h"]
    # Never pickle: object arrays are refused on save, and load uses allow_pickle=False.
    with pytest.raises(models.ModelError):
        models.dumps(models.ModelRecord("detector", "x", {}, {"o": np.array([object()])}))
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(models.ModelError):
        models.load(tmp_path / "bad.npz")
    with pytest.raises(models.ModelError):
        models.load(tmp_path / "missing.npz")


def test_public_api_is_exactly_all() -> None:
    import legion.analytics as a

    for name in a.__all__:
        assert hasattr(a, name)
    assert "ensemble" in a.DETECTORS and "iforest" in a.DETECTORS
    assert {"linear", "holt_winters", "auto"} <= set(a.FORECASTERS)


def test_package_import_has_no_heavy_side_effects() -> None:
    import subprocess
    import sys

    code = ("import sys, legion.analytics; "
            "print(int('torch' in sys.modules), int('zmq' in sys.modules), "
            "int('sklearn' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["0", "0", "0"], out.stderr


def test_torch_is_optional() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; import importlib.util as u; "
            "orig = u.find_spec; u.find_spec = lambda n, *a: None if n == 'torch' else orig(n, *a);"
            " import legion.analytics.forecasters as f; "
            "print('mlp' in f.FORECASTERS, bool(f.TORCH_NOTE)); "
            "import numpy as np; t = np.arange(600) * 300000; "
            "print(len(f.make_forecaster('auto', horizon=12).fit(t, np.sin(t / 1e7)).predict(12)"
            ".mean))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["False", "True", "12"], out.stderr
