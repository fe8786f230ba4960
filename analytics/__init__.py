"""Analytics: anomaly detectors, forecasters, normal bands, model files and the worker.

    from legion.analytics import DETECTORS, make_detector, FORECASTERS, make_forecaster
    det = make_detector("ensemble")            # causal, scores in [0, 1] (see calibration)
    score = det.update(ts_ms, value)           # streaming; det.score(ts, values) for batches
    fc = make_forecaster("auto", horizon=72).fit(ts, values).predict(72)

The worker (`legion.analytics.worker`) and the job schema (`legion.proto.jobs`) are imported
on their own so that importing this package never touches ZeroMQ or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Exported names and their modules, imported on first use: the glue imports this package's
# `config` module to compose the config file, and that must not load numpy (the node agent).
_HOMES = {"NormalBand": "bands", "DETECTORS": "detectors", "Detector": "detectors",
          "make_detector": "detectors", "FORECASTERS": "forecasters", "TORCH_NOTE": "forecasters",
          "Forecast": "forecasters", "Forecaster": "forecasters",
          "make_forecaster": "forecasters", "time_to_threshold": "forecasters"}

__all__ = ["DETECTORS", "FORECASTERS", "TORCH_NOTE", "Detector", "Forecast", "Forecaster",
           "NormalBand", "make_detector", "make_forecaster", "time_to_threshold"]


def __getattr__(name: str) -> Any:
    """The exported names, each loaded from its module when first asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
