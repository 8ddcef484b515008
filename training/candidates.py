"""Which model family to register: boosted trees, a linear model, or a blend, chosen by the CV.

Why a comparison after tuning rather than an Optuna categorical: the tree has ten
hyperparameters worth a Bayesian search, the linear model one (``C``, a seven-value grid costs
less than one tree trial) and the blend one (its weight). Mixing them in one study would spend
trials on a conditional space and make TPE's model of the tree space noisier. So Optuna tunes the
tree; then the best tree, the best linear model and blends of their margins are scored on the
very same folds, and the best mean validation metric wins, unless a simpler candidate is within
one standard error of it (``simplest_within_noise``: linear, then tree, then blends).

Why a fine grid of blend weights that includes 0 and 1: on real tables the tree and the linear
model are often within noise of each other, and a blend of two comparable, differently-wrong
models ranks better than either; choosing one of them by a noisy CV mean throws that away. The
weight is one number chosen on out-of-fold predictions of many folds, so it adds little
selection noise, and since 0 and 1 are on the grid the blend can never be chosen over a family
that did better on the folds. The candidates contain the simple baselines' own specifications:
the linear grid includes the baseline's ``C`` = 1, and the tuning study's first trial is the
shallow XGBoost (``training/tune.py``), so the selection is never structurally worse than them.

The winner's out-of-fold margins (each row predicted by a model that never saw it) are what the
calibrator is fitted on; with them goes each row's fold, so out-of-time plans can calibrate on
the latest validation date (``training/fit.py::oof_calibrator``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.churn_model import model_frame, sigmoid
from churnflow.training.linear import C_GRID, fit_linear_path
from churnflow.training.tune import (
    Folds,
    TuneResult,
    cv_trees,
    direction,
    fold_matrices,
    label_array,
    validation_margin,
)

logger = logging.getLogger(__name__)

TREE_WEIGHTS = (1.0, 0.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
"""Blend weights of the tree margin, in tie-break order (1 = tree, 0 = linear)."""


@dataclass(frozen=True)
class Choice:
    """The selected candidate and how it scored on the folds."""

    family: str
    """``tree``, ``linear`` or ``blend``."""
    tree_weight: float
    tree_params: dict[str, Any]
    n_rounds: int
    """Boosting rounds of the final fit: the mean best iteration over the folds, plus one."""
    linear_c: float
    cv_scores: dict[str, float]
    """Mean fold metric of every candidate (``tree``, ``linear``, ``blend_0.50``, ...)."""
    oof_margin: np.ndarray = field(repr=False)
    oof_label: np.ndarray = field(repr=False)
    oof_fold: np.ndarray | None = field(default=None, repr=False)
    """Index of the (last) fold that validated each out-of-fold row; rolling origins: oldest first."""
    fold_rows: int = 0
    """Mean training rows of a fold, where ``n_rounds`` was found (0: use ``n_rounds`` as is)."""


def fold_metric(objective: str, label: np.ndarray, margin: np.ndarray) -> float:
    """The objective on one fold's validation rows, from margins."""
    if objective == "log_loss":
        return float(log_loss(label, sigmoid(margin), labels=[0, 1]))
    if objective == "roc_auc":
        return float(roc_auc_score(label, margin))
    return float(average_precision_score(label, margin))


def family_of(weight: float) -> str:
    return "tree" if weight == 1.0 else "linear" if weight == 0.0 else "blend"


def tree_oof(dev: pd.DataFrame, folds: Folds, schema: FeatureSchema, settings: Settings,
             params: dict[str, Any]) -> tuple[list[np.ndarray], int]:
    """Validation margins of each fold's early-stopped booster, and the mean best iteration."""
    matrices = fold_matrices(dev, folds, schema)
    _, iterations, boosters = cv_trees(params, matrices, settings)
    margins = [validation_margin(b, dvalid) for b, (_, dvalid) in zip(boosters, matrices, strict=True)]
    return margins, int(round(float(np.mean(iterations))))


def linear_oof(dev: pd.DataFrame, folds: Folds, schema: FeatureSchema, objective: str
               ) -> tuple[list[np.ndarray], float]:
    """Validation margins of the best ``C`` of the linear model on each fold, and that ``C``."""
    frame = model_frame(dev, schema.features, schema.categorical_levels)
    y = label_array(dev)
    best: tuple[float, list[np.ndarray], float] | None = None
    sign = 1.0 if direction(objective) == "maximize" else -1.0
    paths = [fit_linear_path(frame.iloc[t], y[t], schema.features, schema.categorical_levels, C_GRID)
             for t, _ in folds]
    for k, c in enumerate(C_GRID):
        margins = [path[k].margin(frame.iloc[v]) for path, (_, v) in zip(paths, folds, strict=True)]
        score = float(np.mean([fold_metric(objective, y[v], m) for (_, v), m in zip(folds, margins, strict=True)]))
        if best is None or sign * score > sign * best[0]:
            best = (score, margins, c)
    assert best is not None
    return best[1], best[2]


def choose_model(dev: pd.DataFrame, folds: Folds, schema: FeatureSchema, settings: Settings,
                 tuned: TuneResult) -> Choice:
    """Score the tuned tree, the best linear model and their blends on the same folds; pick one."""
    objective = settings.training.objective
    y = label_array(dev)
    if tuned.best_oof is not None:  # the best trial ran now: its fold margins are at hand
        tree, iteration = tuned.best_oof, tuned.best_iteration
    else:
        tree, iteration = tree_oof(dev, folds, schema, settings, tuned.best_params)
    linear, c = linear_oof(dev, folds, schema, objective)
    labels = [y[v] for _, v in folds]
    per_fold: dict[float, np.ndarray] = {}
    for w in TREE_WEIGHTS:
        blended = [w * t + (1 - w) * m for t, m in zip(tree, linear, strict=True)]
        per_fold[w] = np.array([fold_metric(objective, lab, b) for lab, b in zip(labels, blended, strict=True)])
    scores = {w: float(v.mean()) for w, v in per_fold.items()}
    weight = simplest_within_noise(per_fold, 1.0 if direction(objective) == "maximize" else -1.0)
    cv_scores = {(f"blend_{w:.2f}" if family_of(w) == "blend" else family_of(w)): s for w, s in scores.items()}
    logger.info("candidates (mean %s over %d folds): %s -> %s", objective, len(folds),
                {k: round(v, 5) for k, v in cv_scores.items()}, family_of(weight))
    blended = [weight * t + (1 - weight) * m for t, m in zip(tree, linear, strict=True)]
    oof_margin, oof_label, oof_fold = out_of_fold(folds, blended, y)
    return Choice(family=family_of(weight), tree_weight=weight, tree_params=dict(tuned.best_params),
                  n_rounds=iteration + 1, linear_c=c, cv_scores=cv_scores, oof_margin=oof_margin,
                  oof_label=oof_label, oof_fold=oof_fold,
                  fold_rows=int(round(float(np.mean([len(t) for t, _ in folds])))))


def simplest_within_noise(per_fold: dict[float, np.ndarray], sign: float) -> float:
    """The tree weight to register: the simplest candidate within one standard error of the best.

    Simplest first: the linear model, then the tree alone, then the best blend. "Within noise"
    is the one-standard-error rule on the paired per-fold differences to the best candidate
    (Breiman et al. 1984): a candidate whose mean is below the best's by less than the standard
    error of that difference is not distinguishable from it on these folds. Measured on CDNOW:
    a blend ahead of the linear model by 0.0002 log loss on three rolling origins ranked the
    test customers worse than the linear model alone (ROC-AUC 0.8362 vs 0.8373).
    """
    best = max(per_fold, key=lambda w: (sign * per_fold[w].mean(), -TREE_WEIGHTS.index(w)))
    for w in (0.0, 1.0):
        gap = sign * (per_fold[best] - per_fold[w])
        if len(gap) > 1 and gap.mean() <= gap.std(ddof=1) / np.sqrt(len(gap)):
            return w
    return best


def out_of_fold(folds: Folds, margins: list[np.ndarray], label: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One out-of-fold margin per validated row (the mean over repeats), its label and its fold.

    Repeated k-fold validates each row once per repeat; averaging keeps one row once, so the
    calibrator's own cross-validation never sees a row's copy on both sides. The fold is the last
    one that validated the row (rolling origins validate each row once).
    """
    positions = np.concatenate([v for _, v in folds])
    values = np.concatenate(margins)
    fold_index = np.concatenate([np.full(len(v), j) for j, (_, v) in enumerate(folds)])
    rows, inverse = np.unique(positions, return_inverse=True)
    mean = np.bincount(inverse, weights=values) / np.bincount(inverse)
    last_fold = np.zeros(len(rows), dtype=np.int64)
    np.maximum.at(last_fold, inverse, fold_index)
    return mean, label[rows], last_fold
