"""Everything one trained churn model consists of, saved as plain files.

The bundle is the single object that crosses from training to serving: the booster, its
calibrator, the feature schema, the feature dictionary, the segment boundaries and the drift
reference. It is saved as JSON files (no pickles), logged as the artifacts of the MLflow pyfunc
model, and read back by the weekly scoring run, which therefore never re-derives anything that
training decided.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from features.io import write_json
from features.schema import FeatureSchema
from training.calibration import Calibrator

BOOSTER_FILE = "booster.json"
CALIBRATOR_FILE = "calibrator.json"
SCHEMA_FILE = "schema.json"
DICTIONARY_FILE = "dictionary.json"
SEGMENTS_FILE = "segments.json"
REFERENCE_FILE = "reference.json"
METRICS_FILE = "metrics.json"
BUNDLE_FILES = (
    BOOSTER_FILE,
    CALIBRATOR_FILE,
    SCHEMA_FILE,
    DICTIONARY_FILE,
    SEGMENTS_FILE,
    REFERENCE_FILE,
    METRICS_FILE,
)


@dataclass
class ModelBundle:
    booster: xgb.Booster
    calibrator: Calibrator
    schema: FeatureSchema
    best_iteration: int
    dictionary: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    # ---- prediction ---------------------------------------------------------------
    def dmatrix(self, features: pd.DataFrame) -> xgb.DMatrix:
        return xgb.DMatrix(self.schema.to_model_frame(features), enable_categorical=True)

    @property
    def iteration_range(self) -> tuple[int, int]:
        """Trees up to the best iteration only: later trees were fitted past early stopping."""
        return (0, self.best_iteration + 1)

    def margin(self, features: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(
            self.dmatrix(features), output_margin=True, iteration_range=self.iteration_range
        )

    def raw_probability(self, features: pd.DataFrame) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.margin(features)))

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        return self.calibrator.transform(self.raw_probability(features))

    def contributions(self, features: pd.DataFrame) -> np.ndarray:
        """TreeSHAP contributions (n, n_features + 1); the last column is the bias.

        Each row sums to the model's margin for that customer.
        """
        return self.booster.predict(
            self.dmatrix(features), pred_contribs=True, iteration_range=self.iteration_range
        )

    # ---- persistence --------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(folder / BOOSTER_FILE)
        write_json(folder / CALIBRATOR_FILE, self.calibrator.to_dict() | {"best_iteration": self.best_iteration})
        self.schema.save(folder / SCHEMA_FILE)
        write_json(folder / DICTIONARY_FILE, self.dictionary)
        write_json(folder / SEGMENTS_FILE, self.segments)
        write_json(folder / REFERENCE_FILE, self.reference)
        write_json(folder / METRICS_FILE, self.metrics)
        return folder

    @classmethod
    def load(cls, folder: Path) -> ModelBundle:
        folder = Path(folder)
        booster = xgb.Booster()
        booster.load_model(folder / BOOSTER_FILE)
        cal = json.loads((folder / CALIBRATOR_FILE).read_text())
        return cls(
            booster=booster,
            calibrator=Calibrator.from_dict(cal),
            schema=FeatureSchema.load(folder / SCHEMA_FILE),
            best_iteration=int(cal["best_iteration"]),
            dictionary=_read_json(folder / DICTIONARY_FILE),
            segments=_read_json(folder / SEGMENTS_FILE),
            reference=_read_json(folder / REFERENCE_FILE),
            metrics=_read_json(folder / METRICS_FILE),
        )


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else {}
