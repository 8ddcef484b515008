"""The feature schema: what training learned about the columns, reused verbatim at scoring.

Category levels, kept and dropped attributes and the feature order are decided once, on the
training data, and stored with the model. Scoring applies them instead of re-inferring, so a
level that appears next month becomes "missing" rather than a crash or a silently shifted code,
and every partition of customers gets exactly the same columns.

The model's input frame (features in this order, numbers as float64, categories with these
levels) is built in one place: ``training.churn_model.model_frame``, the self-contained kernel the
MLflow model also runs, so training, weekly scoring and the model server cannot disagree.
(``features/`` may not import ``training/``; callers pass ``schema.features`` and
``schema.categorical_levels``.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from churnflow.features.errors import ChurnflowError
from churnflow.features.io import write_json
from churnflow.features.spec import declared_features


class SpendWindow(NamedTuple):
    """Where a customer's spend rate comes from: spend over ``window_days`` and their tenure."""

    feature: str
    window_days: int
    tenure_feature: str | None


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
    roles: dict[str, str] = field(default_factory=dict)
    """Feature name → role from ``features.spec`` (recency, frequency, monetary, monthly_value, ...)."""
    windows: dict[str, int] = field(default_factory=dict)
    """Feature name → window in days, for windowed features."""
    btyd: dict[str, Any] = field(default_factory=dict)
    """BG/NBD: ``horizon_days`` when the features are built, plus ``r, alpha, a, b`` and ``as_of``
    once fitted at the model's as-of date (applied unchanged at any later as-of date)."""

    def __post_init__(self) -> None:
        if self.roles or not self.features:
            return
        # Written by hand or saved before roles existed: the spec gives every feature its role.
        declared = {f.name: f for f in declared_features(self)}
        object.__setattr__(self, "roles", {n: declared[n].role for n in self.features if n in declared})
        object.__setattr__(self, "windows", {n: declared[n].window for n in self.features
                                             if n in declared and declared[n].window is not None})

    def feature_for(self, role: str) -> str | None:
        """The feature playing ``role``; among windowed ones, the longest window. None if absent."""
        named = [f for f in self.features if self.roles.get(f) == role]
        return max(named, key=lambda f: self.windows.get(f, 0)) if named else None

    def window_of(self, feature: str | None) -> int | None:
        return self.windows.get(feature) if feature is not None else None

    def spend_window(self) -> SpendWindow | None:
        """Spend over the longest window (for value at risk); None without amounts."""
        spend = self.feature_for("monetary")
        window = self.window_of(spend)
        return SpendWindow(spend, window, self.feature_for("tenure")) if spend and window else None

    def monthly_value(self) -> str | None:
        """The configured monthly value attribute, used only when the events carry no spend."""
        return None if self.spend_window() else self.feature_for("monthly_value")

    def value_feature(self) -> str | None:
        """What "value" means for segments: spend over the longest window, else activity count
        over it, else the configured monthly value attribute."""
        return self.feature_for("monetary") or self.feature_for("frequency") or self.feature_for("monthly_value")

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
        write_json(path, self.to_dict())

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


class SchemaMismatchError(ChurnflowError, ValueError):
    """Today's features do not match the model's recorded feature schema."""
