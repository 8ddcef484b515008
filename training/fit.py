"""Final fits: the tuned booster, its calibrator, and the untuned baseline, as ModelBundles.

The tuned booster is refitted on the training snapshots for exactly ``best_iteration + 1`` rounds
(the number early stopping chose during tuning), so no tree is fitted past the point that was
validated. The calibrator is fitted on the validation snapshot, which the booster never saw. The
untuned baseline goes through the same path (default params, early stopping, calibration), so the
comparison isolates what tuning bought.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import xgboost as xgb

from features.schema import FeatureSchema
from features.settings import Settings
from training.bundle import ModelBundle
from training.calibration import Calibrator, fit_calibrator
from training.tune import base_params, label_array, make_dmatrix

logger = logging.getLogger(__name__)


def calibrated_bundle(
    booster: xgb.Booster,
    best_iteration: int,
    valid: pd.DataFrame,
    schema: FeatureSchema,
    settings: Settings,
    dictionary: dict[str, dict[str, Any]] | None = None,
) -> ModelBundle:
    """Wrap a booster and fit its calibrator on the validation snapshot."""
    bundle = ModelBundle(
        booster=booster,
        calibrator=Calibrator(method="identity"),  # replaced below, once raw scores exist
        schema=schema,
        best_iteration=int(best_iteration),
        dictionary=dict(dictionary or {}),
    )
    raw = bundle.raw_probability(valid)
    bundle.calibrator = fit_calibrator(raw, label_array(valid), method=settings.training.calibration)
    return bundle


def fit_tuned(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    schema: FeatureSchema,
    settings: Settings,
    best_params: dict[str, Any],
    best_iteration: int,
    dictionary: dict[str, dict[str, Any]] | None = None,
) -> ModelBundle:
    """Refit with the best params for ``best_iteration + 1`` rounds; calibrate on validation."""
    params = base_params(settings) | dict(best_params)
    booster = xgb.train(params, make_dmatrix(train, schema), num_boost_round=int(best_iteration) + 1)
    logger.info("refitted tuned booster: %d rounds on %d rows", best_iteration + 1, len(train))
    return calibrated_bundle(booster, best_iteration, valid, schema, settings, dictionary)


def fit_baseline(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    schema: FeatureSchema,
    settings: Settings,
) -> ModelBundle:
    """Untuned XGBoost (library defaults), early stopping on validation, same calibration."""
    cfg = settings.training
    dvalid = make_dmatrix(valid, schema)
    booster = xgb.train(
        base_params(settings),
        make_dmatrix(train, schema),
        num_boost_round=cfg.max_boost_rounds,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        verbose_eval=False,
    )
    logger.info("untuned baseline: best iteration %d", booster.best_iteration)
    return calibrated_bundle(booster, booster.best_iteration, valid, schema, settings)
