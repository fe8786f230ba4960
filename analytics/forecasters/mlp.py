"""A small PyTorch MLP forecaster (optional: needs the `deep` extra, torch CPU is enough).

Direct multi-step: the last `lags` points (plus the same time yesterday when a daily period is
known) -> the next `max_horizon` points, trained per series on its own history, deterministic seed.
Weights are a torch `state_dict`, exported as numpy arrays by `get_state`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from legion.analytics.forecasters.base import Forecast, daily_period, future_ts, interval


def torch_available() -> bool:
    """True when torch is installed (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


class MLPForecaster:
    """Tiny MLP, direct multi-horizon, per series."""

    name = "mlp"

    def __init__(self, lags: int = 48, max_horizon: int = 144, hidden: int = 64,
                 epochs: int = 150, window: int = 2016, seed: int = 0) -> None:
        self.lags, self.max_horizon, self.hidden = lags, max_horizon, hidden
        self.epochs, self.window, self.seed = epochs, window, seed
        self.ts = np.zeros(0, np.int64)
        self.net: Any = None
        self.center, self.scale = 0.0, 1.0
        self.last = np.zeros(0)
        self.resid = np.zeros(0)
        self.period = 0

    def _inputs(self, y: np.ndarray, ends: np.ndarray) -> np.ndarray:
        cols = [y[e - self.lags:e] for e in ends]
        x = np.asarray(cols)
        if self.period:
            day = np.asarray([y[e - self.period:e - self.period + self.max_horizon] for e in ends])
            x = np.hstack([x, day])
        return x

    def fit(self, ts_ms: np.ndarray, values: np.ndarray) -> MLPForecaster:
        """Train on windows of the newest `window` points."""
        import torch

        self.ts = np.asarray(ts_ms, np.int64)
        raw = np.asarray(values, float)[-self.window:]
        p = daily_period(self.ts[-len(raw):], len(raw))
        self.period = p if p and p >= self.max_horizon and len(raw) > 2 * p else 0
        self.center = float(np.median(raw))
        self.scale = max(float(np.median(np.abs(raw - self.center))) * 1.4826,
                         1e-3 * (abs(self.center) + 1e-9), 1e-9)
        y = (raw - self.center) / self.scale
        first = max(self.lags, self.period)
        ends = np.arange(first, len(y) - self.max_horizon + 1)
        self.last = y
        if len(ends) < 20:
            self.net = None
            self.resid = np.diff(y) * self.scale
            return self
        x = self._inputs(y, ends)
        t = np.asarray([y[e:e + self.max_horizon] for e in ends])
        torch.manual_seed(self.seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], self.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(self.hidden, self.max_horizon))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
        xt = torch.tensor(x, dtype=torch.float32)
        tt = torch.tensor(t, dtype=torch.float32)
        # One thread: the model is tiny and workers parallelise across processes; torch's own
        # threads only contend (10x slower on a busy 2-core box). Restored afterwards.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for _ in range(self.epochs):
                opt.zero_grad()
                loss = torch.nn.functional.l1_loss(net(xt), tt)
                loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
                opt.step()
        finally:
            torch.set_num_threads(threads)
        self.net = net
        with torch.no_grad():
            self.resid = (tt[:, 0] - net(xt)[:, 0]).numpy() * self.scale
        return self

    def predict(self, horizon: int) -> Forecast:
        """Forecast up to `max_horizon` steps (the last value is held beyond it)."""
        import torch

        y = self.last
        if self.net is None:
            mean = np.full(horizon, y[-1] * self.scale + self.center)
        else:
            x = self._inputs(y, np.asarray([len(y)]))
            with torch.no_grad():
                out = self.net(torch.tensor(x, dtype=torch.float32)).numpy()[0]
            out = out[:horizon]
            if horizon > len(out):
                out = np.concatenate([out, np.full(horizon - len(out), out[-1])])
            mean = out * self.scale + self.center
        lo, hi = interval(mean, self.resid)
        return Forecast(future_ts(self.ts, horizon), mean, lo, hi, self.name)

    def get_state(self) -> dict[str, Any]:
        """Fitted state: the torch state_dict as numpy arrays plus the normalisation."""
        sd = {} if self.net is None else {
            f"net.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()}
        return {"center": self.center, "scale": self.scale, "period": self.period, **sd}
