"""The tuned constants of each detector: what was chosen by measurement on the NAB dev files
(printed beside each score by bench/nab.py). The calibration constants every detector shares
count once in each detector."""

from __future__ import annotations

CALIBRATION = ("rarity_window=2000", "decades=4", "tail_q=0.9", "trim=1", "min_history=100",
               "debounce span=100", "damp=0.5", "burst=5", "burst_margin=0.1")
TUNED: dict[str, tuple[str, ...]] = {
    "knn": ("lag=8", "k=2", "episodes", "train_window=1000", "retrain=100", "min_train=100",
            "dscale sample=200", *CALIBRATION),
    "mad": ("window=1000", "seasons=7", "tolerance=1/24", "min points=10", *CALIBRATION),
    "shift": ("short=24", "window=576", "min_ref=30", *CALIBRATION),
}


TUNED["iforest"] = ("window_size=200", "contamination=0.05", "n_estimators=100", *CALIBRATION)
TUNED["kmeans"] = ("lag=6", "smooth=3", "k=2", "train_window=1000", "retrain=250", "models=3",
                   "min_train=100", *CALIBRATION)
TUNED["residual"] = ("short=5", "window=1000", *CALIBRATION)
TUNED["multivar"] = ("lag=12", "hidden=32", "train_window=1000", "retrain=200", "min_train=200",
                     "epochs=60", "lr=0.01", "weight decay=1e-3", "holdout=0.2", *CALIBRATION)
ENSEMBLE_TUNED = ("members (knn, mad, shift)", "blocks=4", "mad_discount=1.0",
                  "shift_discount=0", "agree=0.95", "cost=0.45", "knn k=5", "knn lag=8",
                  "knn train_window=1000", "knn retrain=100", "knn min_train=100",
                  "mad window=1000", "mad seasons=7", "mad tolerance=1/24", "shift short=24",
                  "shift window=576", "shift min_ref=30", *CALIBRATION)
TUNED["ensemble"] = ENSEMBLE_TUNED
TUNED["fisher"] = tuple(c for c in ENSEMBLE_TUNED  # Fisher's method replaces the combination's
                        if c.split("=")[0] not in ("mad_discount", "shift_discount", "agree",
                                                   "cost"))
TUNED["art"] = ("step=5", "window=8", "rho=0.9", "chomp=0.075", "categories=200",
                *CALIBRATION)  # ARTime's view, vigilance and chomp, not fitted here
# contextOSE's constants (rest: NAB's on a 4,000-point file) and `range_points` (chosen by the
# protocol); its default, contextOSE's own score, uses none of the calibration constants.
TUNED["context"] = ("bits=3", "max_left=7", "max_active=15", "base_threshold=0.75", "rest=120",
                    "range_points=600")
# `art` with adaptive=True (bench/nab_members.py "art_adaptive"): ARTime's vigilance schedule
# replaces the fixed rho; none fitted here.
TUNED["art_adaptive"] = tuple(c for c in TUNED["art"] if c != "rho=0.9") + (
    "probation=600", "initial_rho=0.8", "rho_ub cap=0.97", "rho_lb rise=0.19",
    "shortfall floor=0.05", "shortfall cap=0.37", "min step=0.01", "mask=1.5 windows",
    "below-last=0.9/0.7", "confidence=0.35/0.65")
