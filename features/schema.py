"""The feature schema: what training learned about the columns, reused verbatim at scoring.

Category levels, kept and dropped attributes and the feature order are decided once, on the
training data, and stored with the model. Scoring applies them instead of re-inferring, so a
level that appears next month becomes "missing" rather than a crash or a silently shifted code,
and every partition of customers gets exactly the same columns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.errors import ChurnflowError


@dataclass(frozen=True)
class FeatureSchema:
    features: list[str]
    categorical_levels: dict[str, list[str]] = field(default_factory=dict)
    numeric_attributes: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    windows_days: list[int] = field(default_factory=lambda: [30, 90, 365])
    has_amount: bool = True
    has_events: bool = True
    has_contacts: bool = False
    has_signup: bool = True
    attribute_sources: dict[str, str] = field(default_factory=dict)
    """Feature name → customers-table column, for attributes whose name had to be cleaned."""

    @property
    def categorical(self) -> list[str]:
        return [f for f in self.features if f in self.categorical_levels]

    @property
    def numeric(self) -> list[str]:
        return [f for f in self.features if f not in self.categorical_levels]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> FeatureSchema:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def check_columns(self, frame: pd.DataFrame) -> None:
        """Refuse a feature table that does not carry exactly this schema's features."""
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise SchemaMismatchError(
                f"the feature table lacks {len(missing)} feature(s) the model was trained on: "
                f"{missing[:10]}. The data or settings changed since training "
                "(e.g. a column or event type disappeared, or the feature windows changed); "
                "retrain with `churnflow train` or restore the old settings."
            )

    def to_model_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Select the model's features in training order with training dtypes.

        Unseen category values become missing (XGBoost routes them down the default branch).
        The logic is the model's inference kernel, the same code the logged MLflow model runs.
        """
        # The kernel is a self-contained file (numpy, pandas, xgboost only), so this import
        # cannot close a cycle; it lives in training/ because it is logged with the model.
        from training.churn_model import model_frame

        self.check_columns(frame)
        return model_frame(frame, self.features, self.categorical_levels)


class SchemaMismatchError(ChurnflowError, ValueError):
    """Today's features do not match the model's recorded feature schema."""
