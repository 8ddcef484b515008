"""Everything one trained churn model consists of, saved as plain files.

The bundle is the single object that crosses from training to serving: the model (a booster, a
linear model or their blend, see ``training/churn_model.py``), its calibrator, the feature schema,
the feature dictionary, the segment boundaries, the drift reference, the evaluation and what the
model was fitted on. It is frozen and built complete in one place (``training/recipe.py``); it is
saved as JSON files (no pickles), logged as the artifacts of the MLflow pyfunc model, and read
back by the weekly scoring run, which therefore never re-derives anything that training decided.
Predictions go through the inference kernel in ``training/churn_model.py``, the same code the
logged MLflow model runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from churnflow.features.io import write_json
from churnflow.features.schema import FeatureSchema
from churnflow.training.calibration import Calibrator
from churnflow.training.churn_model import (
    BOOSTER_FILE,
    CALIBRATOR_FILE,
    MODEL_FILE,
    SCHEMA_FILE,
    LinearModel,
    Scorer,
    calibrate,
    model_spec,
    read_model_spec,
)

DICTIONARY_FILE = "dictionary.json"
SEGMENTS_FILE = "segments.json"
REFERENCE_FILE = "reference.json"
METRICS_FILE = "metrics.json"
BUNDLE_FILES = (
    BOOSTER_FILE,
    CALIBRATOR_FILE,
    SCHEMA_FILE,
    MODEL_FILE,
    DICTIONARY_FILE,
    SEGMENTS_FILE,
    REFERENCE_FILE,
    METRICS_FILE,
)


@dataclass(frozen=True)
class ModelBundle:
    booster: xgb.Booster | None
    """The tree model (None for a linear model)."""
    calibrator: Calibrator
    schema: FeatureSchema
    best_iteration: int = 0
    dictionary: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    linear: LinearModel | None = None
    tree_weight: float = 1.0
    """Weight of the tree margin in a blend (1 = tree only; ignored without a linear model)."""
    fitted_through: str = ""
    """What the model was fitted on: the last as-of date whose labels it used, or "all rows" of a
    snapshot table. The promotion gate must not judge this model on those rows."""

    @cached_property
    def scorer(self) -> Scorer:
        return Scorer(
            features=list(self.schema.features),
            categorical_levels=dict(self.schema.categorical_levels),
            booster=self.booster,
            best_iteration=self.best_iteration,
            linear=self.linear,
            tree_weight=self.tree_weight,
            calibration=self.calibrator.to_dict(),
        )

    @property
    def family(self) -> str:
        """``tree``, ``linear`` or ``blend``."""
        return self.scorer.family

    # ---- prediction ---------------------------------------------------------------------
    def margin(self, features: pd.DataFrame) -> np.ndarray:
        self.schema.check_columns(features)
        return self.scorer.margin(features)

    def raw_probability(self, features: pd.DataFrame) -> np.ndarray:
        self.schema.check_columns(features)
        return self.scorer.raw_probability(features)

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        return calibrate(self.raw_probability(features), self.calibrator.to_dict())

    def contributions(self, features: pd.DataFrame) -> np.ndarray:
        """Per-feature contributions (n, n_features + 1), bias last, in margin units.

        Each row sums to the model's margin for that customer, for every family: TreeSHAP for
        trees, ``coef * (z - training mean)`` summed over a feature's encoded columns for the
        linear model, and the weighted sum of both for a blend.
        """
        self.schema.check_columns(features)
        return self.scorer.contributions(features)

    # ---- persistence --------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.booster is not None:
            self.booster.save_model(folder / BOOSTER_FILE)
        write_json(folder / CALIBRATOR_FILE, self.calibrator.to_dict())
        write_json(folder / MODEL_FILE, model_spec(self.family, self.tree_weight, self.best_iteration,
                                                    self.linear, self.fitted_through))
        self.schema.save(folder / SCHEMA_FILE)
        write_json(folder / DICTIONARY_FILE, self.dictionary)
        write_json(folder / SEGMENTS_FILE, self.segments)
        write_json(folder / REFERENCE_FILE, self.reference)
        write_json(folder / METRICS_FILE, self.metrics)
        return folder

    @classmethod
    def load(cls, folder: Path) -> ModelBundle:
        folder = Path(folder)
        spec = read_model_spec(folder)
        booster = None
        if spec["family"] != "linear":
            booster = xgb.Booster()
            booster.load_model(folder / BOOSTER_FILE)
        return cls(
            booster=booster,
            calibrator=Calibrator.from_dict(json.loads((folder / CALIBRATOR_FILE).read_text())),
            schema=FeatureSchema.load(folder / SCHEMA_FILE),
            best_iteration=int(spec["best_iteration"]),
            dictionary=_read_json(folder / DICTIONARY_FILE),
            segments=_read_json(folder / SEGMENTS_FILE),
            reference=_read_json(folder / REFERENCE_FILE),
            metrics=_read_json(folder / METRICS_FILE),
            linear=LinearModel.from_dict(spec["linear"]) if spec.get("linear") else None,
            tree_weight=float(spec["tree_weight"]),
            fitted_through=str(spec.get("fitted_through", "")),
        )


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else {}
