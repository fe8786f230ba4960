"""Anomaly detectors: one module each, one table (`DETECTORS`), one protocol (`Detector`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from legion.analytics.detectors.art import AdaptiveArtDetector, ArtDetector
from legion.analytics.detectors.base import Detector, StreamingDetector
from legion.analytics.detectors.context import ContextDetector
from legion.analytics.detectors.ensemble import EnsembleDetector
from legion.analytics.detectors.fisher import FisherEnsembleDetector
from legion.analytics.detectors.iforest import IsolationForestDetector
from legion.analytics.detectors.kmeans import KMeansDetector
from legion.analytics.detectors.knn import KnnDetector
from legion.analytics.detectors.mad import MadDetector
from legion.analytics.detectors.residual import ResidualDetector
from legion.analytics.detectors.shift import ShiftDetector
from legion.analytics.forecasters.mlp import torch_available

DETECTORS: dict[str, Callable[..., Detector]] = {
    "iforest": IsolationForestDetector,
    "mad": MadDetector,
    "kmeans": KMeansDetector,
    "knn": KnnDetector,
    "residual": ResidualDetector,
    "shift": ShiftDetector,
    "ensemble": EnsembleDetector,
    "fisher": FisherEnsembleDetector,
    "art": ArtDetector,
    "context": ContextDetector,
    "art_adaptive": AdaptiveArtDetector,
}
TORCH_NOTE = ""
if torch_available():  # the PyTorch model is optional; torch is imported only when it trains
    from legion.analytics.detectors.multivar import MultivariateDetector

    DETECTORS["multivar"] = MultivariateDetector
else:  # the one line printed (CLI, worker start-up) is forecasters.TORCH_NOTE, naming both
    TORCH_NOTE = "torch not installed: the 'mlp' forecaster and the 'multivar' detector are " \
                 "unavailable (pip install 'legion-monitor[deep]')"


def make_detector(name: str, **params: Any) -> Detector:
    """A fresh detector from the table (KeyError-free: unknown names raise ValueError)."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose from {sorted(DETECTORS)}") from None
    return factory(**params)


__all__ = ["DETECTORS", "TORCH_NOTE", "Detector", "StreamingDetector", "make_detector"]
