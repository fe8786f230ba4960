"""Forecasters: one module each, one table (`FORECASTERS`), one protocol (`Forecaster`).

`mlp` needs torch (the `deep` extra); without it the table lacks it and `TORCH_NOTE` says so once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from legion.analytics.forecasters.base import Forecast, Forecaster
from legion.analytics.forecasters.combo import ComboForecaster
from legion.analytics.forecasters.holtwinters import HoltWinters
from legion.analytics.forecasters.level import RobustLevel
from legion.analytics.forecasters.linear import RobustLinear
from legion.analytics.forecasters.mlp import MLPForecaster, torch_available
from legion.analytics.forecasters.naive import SeasonalNaive
from legion.analytics.forecasters.profile import RobustProfile
from legion.analytics.forecasters.select import (
    AutoForecaster,
    ThresholdEta,
    backtest,
    time_to_threshold,
)

FORECASTERS: dict[str, Callable[..., Forecaster]] = {
    "seasonal_naive": SeasonalNaive,
    "level": RobustLevel,
    "linear": RobustLinear,
    "holt_winters": HoltWinters,
    "profile": RobustProfile,
    "combo": ComboForecaster,
}
TORCH_NOTE = ""
if torch_available():
    FORECASTERS["mlp"] = MLPForecaster
else:  # said once, by whoever prints TORCH_NOTE (CLI, worker start-up)
    TORCH_NOTE = "torch not installed: the 'mlp' forecaster and the 'multivar' detector are " \
                 "unavailable (pip install 'legion-monitor[deep]')"
FORECASTERS["auto"] = AutoForecaster


def make_forecaster(name: str, **params: Any) -> Forecaster:
    """A fresh forecaster from the table (unknown names raise ValueError)."""
    try:
        factory = FORECASTERS[name]
    except KeyError:
        raise ValueError(f"unknown forecaster {name!r}; choose from {sorted(FORECASTERS)}"
                         ) from None
    return factory(**params)


__all__ = ["FORECASTERS", "TORCH_NOTE", "AutoForecaster", "Forecast", "Forecaster",
           "ThresholdEta", "backtest", "make_forecaster", "time_to_threshold"]
