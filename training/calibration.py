"""Probability calibration fitted on held-out rows, stored as plain numbers.

Retention agents read the probabilities, and tiers cut them at fixed values, so the model's raw
scores (distorted by class weighting and early stopping) are mapped to observed churn rates.
The fitted map is exported to JSON (isotonic knots or Platt coefficients) so the model artifact
carries no pickled scikit-learn object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class Calibrator:
    method: Literal["isotonic", "sigmoid", "identity"]
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    def transform(self, raw_probability: np.ndarray) -> np.ndarray:
        p = np.asarray(raw_probability, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(p, np.asarray(self.x), np.asarray(self.y))
        if self.method == "sigmoid":
            eps = 1e-12
            margin = np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - p, eps, 1))
            return 1.0 / (1.0 + np.exp(-(self.a * margin + self.b)))
        return p

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": list(self.x), "y": list(self.y), "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(
            method=data["method"],
            x=tuple(data.get("x", ())),
            y=tuple(data.get("y", ())),
            a=float(data.get("a", 1.0)),
            b=float(data.get("b", 0.0)),
        )


def fit_calibrator(
    raw_probability: np.ndarray,
    label: np.ndarray,
    method: Literal["isotonic", "sigmoid"] = "isotonic",
) -> Calibrator:
    """Fit on rows the booster never trained on (the validation snapshot)."""
    p = np.asarray(raw_probability, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return Calibrator(method="identity")
    if method == "isotonic":
        # A block of validation rows with no churner does not make churn impossible: bound the
        # map away from 0 and 1 (1/(n+2), Laplace-style) so log loss stays finite and sensible.
        eps = 1.0 / (len(y) + 2)
        iso = IsotonicRegression(out_of_bounds="clip", y_min=eps, y_max=1.0 - eps).fit(p, y)
        return Calibrator(
            method="isotonic",
            x=tuple(float(v) for v in iso.X_thresholds_),
            y=tuple(float(v) for v in iso.y_thresholds_),
        )
    eps = 1e-12
    margin = np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - p, eps, 1)).reshape(-1, 1)
    lr = LogisticRegression(C=1e6).fit(margin, y)
    return Calibrator(method="sigmoid", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def expected_calibration_error(probability: np.ndarray, label: np.ndarray, n_bins: int = 10) -> float:
    """Weighted mean |observed rate - mean predicted| over equal-width probability bins."""
    p = np.asarray(probability, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(p)) if len(p) else float("nan")
