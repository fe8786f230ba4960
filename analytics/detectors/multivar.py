"""Multivariate per-node detector (PyTorch, optional): all host metrics of a node together.

A small next-step predictor: from the last `lag` standardised metric vectors of a node it predicts
the next vector (an MLP on top of persistence: prediction = last vector + net(window)). The raw
surprise of a vector is the root mean square of its prediction residuals, each divided by that
metric's robust residual scale on the training window; `Rarity` calibrates it to [0, 1] with the
same meaning as every other detector (0.8 = a 1-in-1,600 point for this node) and `Debounce`
reports a persisting anomaly once. A broken relation between metrics (load up while CPU stays
idle) raises the residual as much as an out-of-range value does.

Causal: every `retrain` points (after `min_train`) the network is refitted on the last
`train_window` vectors minus the newest `holdout` fraction (full-batch Adam with weight decay,
`epochs` steps, warm-started from the previous weights, seeded initialisation); the held-out
residuals give each metric's residual scale. It only scores points after its fit. Inference is
numpy (float64) on the exported weights, so streaming equals batch bit for bit; torch is imported
only to train.
State = the vector buffer, the standardisation, the torch `state_dict` as numpy arrays, counters.

    det = MultivariateDetector()
    s = det.update_vector(ts_ms, np.array([cpu, mem, load1, disk]))   # one node, one tick
    s = det.update(ts_ms, value)                                       # a plain series (1-D)

A vector with a non-finite entry scores 0 and is not learnt (send complete ticks only). The
dimension is fixed by the first vector.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from legion.analytics.calibration import spread_floor
from legion.analytics.detectors.base import StreamingDetector


class MultivariateDetector(StreamingDetector):
    """Next-step MLP over a node's standardised metric vectors; calibrated residual surprise."""

    name = "multivar"

    def __init__(self, lag: int = 12, hidden: int = 32, train_window: int = 1000,
                 retrain: int = 200, min_train: int = 200, epochs: int = 60, lr: float = 0.01,
                 holdout: float = 0.2, combine: str = "rms", seed: int = 0,
                 rarity_window: int = 2000, decades: float = 4.0, debounce: int = 100) -> None:
        if combine not in ("rms", "max"):
            raise ValueError(f"multivar: combine must be 'rms' or 'max', not {combine!r}")
        super().__init__(rarity_window, decades, debounce, lag=lag, hidden=hidden,
                         train_window=train_window, retrain=retrain, min_train=min_train,
                         epochs=epochs, lr=lr, holdout=holdout, combine=combine, seed=seed)
        self.lag, self.hidden, self.train_window = lag, hidden, train_window
        self.retrain_every, self.min_train, self.epochs = retrain, min_train, epochs
        self.lr, self.holdout, self.seed, self.combine = lr, holdout, seed, combine
        self.dim = 0
        self.buf: deque[np.ndarray] = deque(maxlen=train_window)
        self.count = 0
        self.fits = 0
        self.center = np.zeros(0)
        self.scale = np.ones(0)
        self.rscale = np.ones(0)
        self.weights: dict[str, np.ndarray] = {}
        self.fit_score = math.nan  # held-out residual RMS (in residual scales) of the last fit

    # ---- inference (numpy) --------------------------------------------------------------------
    def _z(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.center) / self.scale, -10.0, 10.0)

    def _predict(self, zwin: np.ndarray) -> np.ndarray:
        """Prediction of the next standardised vector(s) from windows (n, lag, dim)."""
        w = self.weights
        flat = zwin.reshape(len(zwin), -1)
        h = np.tanh(flat @ w["0.weight"].T + w["0.bias"])
        nxt: np.ndarray = zwin[:, -1, :] + h @ w["2.weight"].T + w["2.bias"]
        return nxt

    def _raw(self, x: np.ndarray) -> float:
        if not self.weights or len(self.buf) < self.lag:
            return 0.0
        win = np.asarray([self.buf[-k] for k in range(self.lag, 0, -1)])
        pred = self._predict(self._z(win)[None])[0]
        u = (self._z(x) - pred) / self.rscale
        if self.combine == "max":
            return float(np.max(np.abs(u)))
        return float(np.sqrt(np.mean(u * u)))

    # ---- training (torch) ---------------------------------------------------------------------
    def refit(self) -> bool:
        """Refit now on the current window (on demand / by age); False when too little data."""
        if len(self.buf) < max(self.lag + 10, min(self.min_train, self.train_window)):
            return False
        self._fit()
        return True

    def _fit(self) -> None:
        import torch

        # One thread: the net is tiny, thread start-up dominates and contends with the other
        # workers (measured 10x slower with the default threads on a busy 2-core box); it also
        # keeps the arithmetic, hence the scores, independent of the host's core count.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._fit_torch(torch)
        finally:
            torch.set_num_threads(threads)

    def _fit_torch(self, torch: Any) -> None:
        x = np.asarray(self.buf, float)
        self.center = np.median(x, axis=0)
        mad = 1.4826 * np.median(np.abs(x - self.center), axis=0)
        spread = np.quantile(x, 0.95, axis=0) - np.quantile(x, 0.05, axis=0)
        self.scale = np.maximum(mad, spread_floor(spread, self.center))
        z = self._z(x)
        wins = np.lib.stride_tricks.sliding_window_view(z, self.lag, axis=0)  # (n-lag+1, d, lag)
        wins = np.transpose(wins, (0, 2, 1))[:-1]                            # inputs
        target = z[self.lag:]
        g = torch.Generator().manual_seed(self.seed)
        net = torch.nn.Sequential(torch.nn.Linear(self.lag * self.dim, self.hidden),
                                  torch.nn.Tanh(), torch.nn.Linear(self.hidden, self.dim))
        with torch.no_grad():
            for p in net.parameters():  # seeded init, independent of the global RNG
                p.copy_(torch.empty(p.shape).uniform_(-1, 1, generator=g)
                        / math.sqrt(p.shape[-1]))
        if self.weights:  # warm start: continue learning from the previous model
            net.load_state_dict({k: torch.from_numpy(v.astype(np.float32))
                                 for k, v in self.weights.items()})
        # The newest `holdout` of the windows is not trained on: its residuals set the per-metric
        # residual scale (in-sample residuals of an over-parameterised net are far too small).
        n_tr = max(1, len(wins) - max(20, int(self.holdout * len(wins))))
        xin = torch.from_numpy(wins[:n_tr].reshape(n_tr, -1).astype(np.float32))
        resid = torch.from_numpy((target[:n_tr] - wins[:n_tr, -1, :]).astype(np.float32))
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=1e-3)
        for _ in range(self.epochs):
            opt.zero_grad()
            loss = torch.mean((net(xin) - resid) ** 2)
            loss.backward()
            opt.step()
        self.weights = {k: v.detach().numpy().astype(np.float64).copy()
                        for k, v in net.state_dict().items()}
        e = (target - self._predict(wins))[n_tr:]
        self.rscale = np.maximum(1.4826 * np.median(np.abs(e), axis=0), 1e-2)
        self.fit_score = float(np.sqrt(np.mean((e / self.rscale) ** 2)))
        self.fits += 1

    # ---- streaming ----------------------------------------------------------------------------
    def _observe(self, x: np.ndarray) -> float:
        if self.dim == 0:
            self.dim = len(x)
        elif len(x) != self.dim:
            raise ValueError(f"multivar: expected {self.dim} metrics, got {len(x)}")
        r = self._raw(x)
        self.buf.append(x)
        self.count += 1
        if self.count >= self.min_train and (self.count - self.min_train) % self.retrain_every \
                == 0:
            self._fit()
        return r

    def _surprise(self, ts_ms: int, value: float) -> float:
        return self._observe(np.asarray([value], float))

    def update_vector(self, ts_ms: int, x: Sequence[float] | np.ndarray) -> float:
        """Score of one node tick (all its metrics, same order every time)."""
        v = np.asarray(x, float).ravel()
        if not np.all(np.isfinite(v)):
            return 0.0
        r = self._observe(v)
        lp = self.rarity.log_p(r)
        self.rarity.win.push(r)
        return self.debounce(min(1.0, max(0.0, lp / self.rarity.decades)))

    def score_matrix(self, ts_ms: Sequence[int] | np.ndarray, x: np.ndarray,
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Scores of many ticks (rows of x), same as `update_vector` in a loop."""
        ts = np.asarray(ts_ms, np.int64)
        m = np.asarray(x, float)
        out = np.empty(len(m))
        for i in range(len(m)):
            out[i] = self.update_vector(int(ts[i]), m[i])
            if progress is not None and (i + 1) % 1000 == 0:
                progress(1000)
        return out

    # ---- state --------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        buf = np.asarray(self.buf, float).reshape(len(self.buf), self.dim)
        return {"dim": self.dim, "buf": buf, "count": self.count, "fits": self.fits,
                "center": self.center.copy(), "scale": self.scale.copy(),
                "rscale": self.rscale.copy(), "fit_score": float(self.fit_score),
                "weights": {k: v.copy() for k, v in self.weights.items()}}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.dim = int(state["dim"])
        rows: list[np.ndarray] = (list(np.asarray(state["buf"], float).reshape(-1, self.dim))
                                  if self.dim else [])
        self.buf = deque(rows, maxlen=self.train_window)
        self.count, self.fits = int(state["count"]), int(state["fits"])
        self.center = np.asarray(state["center"], float).ravel()
        self.scale = np.asarray(state["scale"], float).ravel()
        self.rscale = np.asarray(state["rscale"], float).ravel()
        self.fit_score = float(state["fit_score"])
        self.weights = {k: np.asarray(v, float) for k, v in dict(state["weights"]).items()}
