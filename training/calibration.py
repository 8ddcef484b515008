"""Probability calibration that never reorders customers, chosen on held-out rows, stored as numbers.

Retention agents read the probabilities and tiers cut them at fixed values, so the model's raw
scores (distorted by class weighting and early stopping) are mapped to observed churn rates. The
priority list, however, is ordered by the model's own score: a calibration map that is flat over a
stretch of scores (plain isotonic regression) turns thousands of distinct scores into a few dozen
ties, loses ranking quality and leaves the order inside each tie arbitrary. Every map here is
therefore *strictly* increasing:

- ``sigmoid`` (Platt): ``σ(a·logit p + b)`` with ``a > 0``;
- ``beta`` (Kull, Silva Filho & Flach 2017): ``σ(a·log p − b·log(1−p) + c)`` with ``a, b ≥ 0``
  and ``a + b > 0``, a logistic regression on ``[log p, −log(1−p)]`` under that constraint;
- ``isotonic``: centred isotonic regression (knots at the mean raw score of each pooled block,
  linear in between) plus ``TIE_BREAK · p``, so even the flat ends keep the raw order and the
  number of distinct outputs equals the number of distinct inputs;
- ``identity``: the raw probability, kept when no map lowers the cross-validated log loss.

``fit_calibrator(..., method="auto")`` picks among the four by out-of-fold log loss on the
calibration rows. Out-of-time plans use ``fit_calibrator_out_of_time``: there the churn rate
moves between as-of dates (on CDNOW it rose from 0.84 to 0.87 between the validation dates and
the test date), and a map fitted on all validation dates pooled learned an older world: it made
the test log loss worse (0.283 raw, 0.301 calibrated). So a map must first prove itself out of
time (fitted on the earlier validation dates, judged on the latest), and is then fitted on the
latest date only. The fitted map is plain JSON (``to_dict``); ``apply_calibration`` is a small
pure numpy function of those fields in ``training/churn_model.py`` (the model's inference
kernel), so the serving model needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

# The map itself lives in the model's self-contained inference kernel, which the logged MLflow
# model runs without churnflow; it is imported here so there is exactly one implementation.
from churnflow.training.churn_model import _LOG_CLIP, TIE_BREAK, apply_calibration
from churnflow.training.churn_model import logit as _logit
from churnflow.training.churn_model import sigmoid as _sigmoid

Method = Literal["identity", "sigmoid", "beta", "isotonic"]
FITTED_METHODS: tuple[Method, ...] = ("sigmoid", "beta", "isotonic")
MIN_RELATIVE_GAIN = 1e-3
"""A map replaces the identity only if it lowers the out-of-fold log loss by at least 0.1 %."""


@dataclass(frozen=True)
class Calibrator:
    method: Method
    x: tuple[float, ...] = ()
    """isotonic: knot positions (mean raw score of each pooled block), strictly increasing."""
    y: tuple[float, ...] = ()
    """isotonic: knot values (the block's churn rate), strictly increasing."""
    a: float = 1.0
    """sigmoid: slope on logit p; beta: weight of log p."""
    b: float = 0.0
    """sigmoid: intercept; beta: weight of −log(1−p)."""
    c: float = 0.0
    """beta: intercept."""
    tie_break: float = 0.0
    """isotonic: weight of the raw score (``TIE_BREAK`` when fitted; 0 in maps stored before)."""
    log_loss_by_method: dict[str, float] = field(default_factory=dict)
    """Out-of-fold log loss of each method on the calibration rows (``auto`` only)."""

    def transform(self, raw_probability: np.ndarray) -> np.ndarray:
        return apply_calibration(raw_probability, self.method, self.x, self.y, self.a, self.b, self.c,
                                 self.tie_break)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "x": list(self.x),
            "y": list(self.y),
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "tie_break": self.tie_break,
            "log_loss_by_method": dict(self.log_loss_by_method),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(
            method=data["method"],
            x=tuple(data.get("x", ())),
            y=tuple(data.get("y", ())),
            a=float(data.get("a", 1.0)),
            b=float(data.get("b", 0.0)),
            c=float(data.get("c", 0.0)),
            tie_break=float(data.get("tie_break", 0.0)),
            log_loss_by_method={k: float(v) for k, v in data.get("log_loss_by_method", {}).items()},
        )


# ---- fitting ---------------------------------------------------------------------------------
def fit_calibrator(
    raw_probability: np.ndarray,
    label: np.ndarray,
    method: Literal["auto", "identity", "sigmoid", "beta", "isotonic"] = "auto",
    *,
    seed: int = 0,
    n_folds: int = 5,
) -> Calibrator:
    """Fit on rows the model never trained on (validation rows or out-of-fold predictions).

    ``auto`` compares the out-of-fold log loss of every map with that of the raw probabilities
    and keeps the identity unless a map is better by ``MIN_RELATIVE_GAIN``; the winner is then
    refitted on all calibration rows.
    """
    p = np.asarray(raw_probability, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    if method == "identity" or len(np.unique(y)) < 2:
        return Calibrator(method="identity")
    if method != "auto":
        return _fit_one(method, p, y)
    losses = out_of_fold_log_loss(p, y, seed=seed, n_folds=n_folds)
    best = min(losses, key=losses.__getitem__)
    if losses[best] > losses["identity"] * (1.0 - MIN_RELATIVE_GAIN):
        best = "identity"
    chosen = Calibrator(method="identity") if best == "identity" else _fit_one(best, p, y)
    return replace(chosen, log_loss_by_method=losses)


def fit_calibrator_out_of_time(
    raw_probability: np.ndarray,
    label: np.ndarray,
    fold: np.ndarray,
    method: Literal["auto", "identity", "sigmoid", "beta", "isotonic"] = "auto",
    *,
    seed: int = 0,
) -> Calibrator:
    """Calibrate out-of-fold predictions of rolling-origin folds (``fold``: 0 = oldest date).

    ``auto``: every map is fitted on the earlier dates and judged by log loss on the latest one;
    the identity stays unless a map beats it there by ``MIN_RELATIVE_GAIN``. The chosen map (or
    an explicit ``method``) is then fitted on the latest date only, the one closest to the rows
    the model will score. With a single date this is :func:`fit_calibrator` on it.
    """
    p = np.asarray(raw_probability, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    fold = np.asarray(fold)
    latest = fold == fold.max() if len(fold) else np.zeros(0, dtype=bool)
    earlier = ~latest
    if method != "auto" or len(np.unique(y[earlier])) < 2 or len(np.unique(y[latest])) < 2:
        return fit_calibrator(p[latest], y[latest], method, seed=seed)
    clip = (_LOG_CLIP, 1 - _LOG_CLIP)
    losses = {"identity": float(log_loss(y[latest], np.clip(p[latest], *clip), labels=[0, 1]))}
    for m in FITTED_METHODS:
        mapped = _fit_one(m, p[earlier], y[earlier]).transform(p[latest])
        losses[m] = float(log_loss(y[latest], np.clip(mapped, *clip), labels=[0, 1]))
    best = min(losses, key=losses.__getitem__)
    if losses[best] > losses["identity"] * (1.0 - MIN_RELATIVE_GAIN):
        best = "identity"
    chosen = Calibrator(method="identity") if best == "identity" else _fit_one(best, p[latest], y[latest])
    return replace(chosen, log_loss_by_method=losses)


def out_of_fold_log_loss(p: np.ndarray, y: np.ndarray, *, seed: int, n_folds: int = 5) -> dict[str, float]:
    """Log loss of the raw scores and of each map fitted on the other folds (stratified)."""
    losses = {"identity": float(log_loss(y, np.clip(p, _LOG_CLIP, 1 - _LOG_CLIP), labels=[0, 1]))}
    folds = int(min(n_folds, np.bincount(y.astype(int), minlength=2).min()))
    if folds < 2:
        return losses
    out_of_fold = {m: np.empty_like(p) for m in FITTED_METHODS}
    for fit_rows, held_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(p, y):
        for m in FITTED_METHODS:
            out_of_fold[m][held_rows] = _fit_one(m, p[fit_rows], y[fit_rows]).transform(p[held_rows])
    for m, q in out_of_fold.items():
        losses[m] = float(log_loss(y, np.clip(q, _LOG_CLIP, 1 - _LOG_CLIP), labels=[0, 1]))
    return losses


def _fit_one(method: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
    if len(np.unique(y)) < 2:
        return Calibrator(method="identity")
    if method == "isotonic":
        return _fit_isotonic(p, y)
    if method == "sigmoid":
        (a, b), _ = _constrained_logistic(_logit(p)[:, None], y)
        # a == 0 would be a constant map; the bound keeps a ≥ 0, this keeps it strictly positive.
        return Calibrator(method="sigmoid", a=a, b=b) if a > 0 else Calibrator(method="identity")
    if method == "beta":
        q = np.clip(p, _LOG_CLIP, 1.0 - _LOG_CLIP)
        (a, b, c), _ = _constrained_logistic(np.column_stack([np.log(q), -np.log1p(-q)]), y)
        return Calibrator(method="beta", a=a, b=b, c=c) if a + b > 0 else Calibrator(method="identity")
    raise ValueError(f"unknown calibration method {method!r}")


def _constrained_logistic(features: np.ndarray, y: np.ndarray) -> tuple[list[float], float]:
    """Logistic regression with non-negative slopes (free intercept, last), by L-BFGS-B.

    A tiny ridge on the slopes keeps the fit finite when the calibration rows are separable.
    """
    n, k = features.shape
    design = np.column_stack([features, np.ones(n)])
    ridge = 1e-6

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ w
        # log(1 + e^z) − y·z, computed stably; gradient X'(σ(z) − y).
        loss = np.logaddexp(0.0, z).sum() - y @ z + 0.5 * ridge * (w[:k] @ w[:k])
        grad = design.T @ (_sigmoid(z) - y)
        grad[:k] += ridge * w[:k]
        return float(loss / n), grad / n

    start = np.r_[np.ones(k), 0.0]
    bounds = [(0.0, None)] * k + [(None, None)]
    result = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", bounds=bounds)
    return [float(v) for v in result.x], float(result.fun)


def _fit_isotonic(p: np.ndarray, y: np.ndarray) -> Calibrator:
    """Centred isotonic regression: one knot per pooled block, at the block's mean raw score.

    A block of calibration rows with no churner does not make churn impossible: the block values
    are bounded away from 0 and 1 by 1/(n+2) (Laplace-style) so log loss stays finite.
    """
    eps = 1.0 / (len(y) + 2)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=eps, y_max=1.0 - eps).fit(p, y)
    block_value = iso.predict(p)
    values, block = np.unique(block_value, return_inverse=True)
    knots_x = np.bincount(block, weights=p) / np.bincount(block)
    return Calibrator(
        method="isotonic",
        x=tuple(float(v) for v in knots_x),
        y=tuple(float(v) for v in values),
        tie_break=TIE_BREAK,
    )


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
