"""Final fits of a chosen candidate, and small helpers to fit one booster by hand.

The chosen candidate (``training/candidates.py``) is refitted on a given set of labelled rows
with what the cross-validation decided: the tree for the best round of the mean fold curve + 1,
grown with the square root of the rows gained over a fold (``final_rounds``), the linear model with the chosen ``C``, and the blend
weight. The calibrator comes from the out-of-fold margins, predicted by models that never saw
those rows. Which rows each fit may use is the recipe's rule (``training/recipe.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.bundle import ModelBundle
from churnflow.training.calibration import Calibrator, fit_calibrator, fit_calibrator_out_of_time
from churnflow.training.candidates import Choice
from churnflow.training.churn_model import LinearModel, model_frame, sigmoid
from churnflow.training.linear import fit_linear
from churnflow.training.tune import base_params, label_array, make_dmatrix

logger = logging.getLogger(__name__)


def fit_tree(rows: pd.DataFrame, schema: FeatureSchema, params: dict[str, Any], n_rounds: int) -> xgb.Booster:
    return xgb.train(params, make_dmatrix(rows, schema), num_boost_round=int(n_rounds))


MAX_ROUNDS_FACTOR = 2.0


def final_rounds(choice: Choice, n_rows: int) -> int:
    """Boosting rounds for a fit on ``n_rows``: the CV's count, grown with the square root of the
    data gained over a fold's training rows (at most ``MAX_ROUNDS_FACTOR`` times).

    Why: the count was found on folds that train on a part of the rows (4/5 of the development
    rows, themselves 4/5 of the table), and more rows support more rounds before overfitting.
    Measured on the attrition table: the shallow XGBoost stopped on the mean fold curve at about
    120 rounds ranked held-out rows at ROC-AUC 0.807, at 200 rounds 0.816, at 300 0.819. The
    square root is the cautious end of the usual rule (rounds in proportion to rows).
    """
    if not choice.fold_rows or n_rows <= choice.fold_rows:
        return int(choice.n_rounds)
    factor = min(MAX_ROUNDS_FACTOR, float(np.sqrt(n_rows / choice.fold_rows)))
    return int(round(choice.n_rounds * factor))


def fit_choice(rows: pd.DataFrame, schema: FeatureSchema, choice: Choice
               ) -> tuple[xgb.Booster | None, LinearModel | None]:
    """The chosen family's booster and/or linear model, fitted on ``rows``."""
    rounds = final_rounds(choice, len(rows))
    booster = fit_tree(rows, schema, choice.tree_params, rounds) if choice.tree_weight > 0 else None
    linear = None
    if choice.tree_weight < 1:
        frame = model_frame(rows, schema.features, schema.categorical_levels)
        linear = fit_linear(frame, label_array(rows), schema.features, schema.categorical_levels, choice.linear_c)
    logger.info("fitted %s on %d rows (%d rounds, C %s, tree weight %.2f)", choice.family, len(rows),
                rounds, choice.linear_c, choice.tree_weight)
    return booster, linear


def oof_calibrator(choice: Choice, settings: Settings, out_of_time: bool = False) -> Calibrator:
    """The calibration map, fitted on the chosen candidate's out-of-fold predictions.

    Out of time (rolling-origin folds), the map is chosen out of time and fitted on the latest
    validation date (``fit_calibrator_out_of_time``); otherwise on every out-of-fold row.
    """
    method, seed = settings.training.calibration, settings.training.seed
    if out_of_time and choice.oof_fold is not None and len(np.unique(choice.oof_fold)) > 1:
        return fit_calibrator_out_of_time(sigmoid(choice.oof_margin), choice.oof_label, choice.oof_fold, method,
                                          seed=seed)
    return fit_calibrator(sigmoid(choice.oof_margin), choice.oof_label, method=method, seed=seed)


def fit_bundle(rows: pd.DataFrame, schema: FeatureSchema, choice: Choice, calibrator: Calibrator,
               **fields: Any) -> ModelBundle:
    """A complete bundle of ``choice`` fitted on ``rows``; ``fields`` fill the rest (metrics, ...)."""
    booster, linear = fit_choice(rows, schema, choice)
    return ModelBundle(booster=booster, calibrator=calibrator, schema=schema,
                       best_iteration=final_rounds(choice, len(rows)) - 1,
                       linear=linear, tree_weight=choice.tree_weight, **fields)


def fit_tuned(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    schema: FeatureSchema,
    settings: Settings,
    best_params: dict[str, Any],
    best_iteration: int,
    dictionary: dict[str, dict[str, Any]] | None = None,
) -> ModelBundle:
    """A tree with given params for ``best_iteration + 1`` rounds on ``train``, calibrated on ``valid``."""
    booster = fit_tree(train, schema, base_params(settings) | dict(best_params), int(best_iteration) + 1)
    uncalibrated = ModelBundle(booster=booster, calibrator=Calibrator(method="identity"), schema=schema,
                               best_iteration=int(best_iteration))
    calibrator = fit_calibrator(uncalibrated.raw_probability(valid), label_array(valid),
                                method=settings.training.calibration)
    return ModelBundle(booster=booster, calibrator=calibrator, schema=schema, best_iteration=int(best_iteration),
                       dictionary=dict(dictionary or {}))
