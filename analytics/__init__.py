"""Analytics: anomaly detectors, forecasters, normal bands, model files and the worker.

    from legion.analytics import DETECTORS, make_detector, FORECASTERS, make_forecaster
    det = make_detector("ensemble")            # causal, scores in [0, 1] (see calibration)
    score = det.update(ts_ms, value)           # streaming; det.score(ts, values) for batches
    fc = make_forecaster("auto", horizon=72).fit(ts, values).predict(72)

The worker (`legion.analytics.worker`) and the job schema (`legion.proto.jobs`) are imported
on their own so that importing this package never touches ZeroMQ or torch.
"""

from __future__ import annotations

from legion.analytics.bands import NormalBand
from legion.analytics.detectors import DETECTORS, Detector, make_detector
from legion.analytics.forecasters import (
                                          FORECASTERS,
                                          TORCH_NOTE,
                                          Forecast,
                                          Forecaster,
                                          make_forecaster,
                                          time_to_threshold,
)

__all__ = ["DETECTORS", "FORECASTERS", "TORCH_NOTE", "Detector", "Forecast", "Forecaster",
           "NormalBand", "make_detector", "make_forecaster", "time_to_threshold"]
