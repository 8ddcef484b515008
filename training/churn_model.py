"""The churn model's inference kernel and its MLflow pyfunc wrapper, in one self-contained file.

This file is logged as the model's code (MLflow 3 "models from code") and needs nothing but
numpy, pandas, xgboost and mlflow: no ``code_paths``, so no package of churnflow is put on the
``sys.path`` of a model server, where a ``features`` or ``training`` module of its own would
shadow ours or be shadowed. Inside churnflow the same functions are imported
(``training.bundle.ModelBundle``, ``features.schema.FeatureSchema``), so training, the weekly
scoring and the MLflow model compute one and the same probability.

What the kernel knows how to do, all from the bundle's JSON files:

- the model frame: the schema's features in training order and dtypes, category levels fixed
  at training (values never seen become missing);
- the margin of a ``tree`` (XGBoost booster up to its best iteration), a ``linear`` model
  (median imputation + missing indicators, log1p of skewed counts, standardisation, one-hot
  levels, logistic coefficients) or a ``blend`` (``w * tree + (1 - w) * linear`` in margin
  units, so per-feature contributions of the two add up too);
- per-feature contributions that sum, with the bias column last, to the margin;
- the calibration map from raw probability to churn probability.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

BUNDLE_ARTIFACT = "bundle"
BOOSTER_FILE = "booster.json"
CALIBRATOR_FILE = "calibrator.json"
SCHEMA_FILE = "schema.json"
MODEL_FILE = "model.json"
"""Family, blend weight, best iteration, linear coefficients, what the model was fitted on."""


# ---- model frame ---------------------------------------------------------------------------
def known_levels(values: pd.Series, levels: list[str]) -> pd.Categorical:
    """A categorical with exactly the recorded levels; values never seen in training become missing."""
    text = pd.Series(values).astype("string").str.strip()
    return pd.Categorical(text.where(text.isin(levels)), categories=levels)


def model_frame(frame: pd.DataFrame, features: list[str], categorical_levels: dict[str, list[str]]) -> pd.DataFrame:
    """The model's features in training order: numbers as float64, categories with fixed levels."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise KeyError(f"the input lacks {len(missing)} feature(s) the model was trained on: {missing[:10]}")
    out = {
        name: known_levels(frame[name], categorical_levels[name])
        if name in categorical_levels
        else pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
        for name in features
    }
    return pd.DataFrame(out, index=frame.index)


# ---- calibration ---------------------------------------------------------------------------
# The calibration maps of ``training/calibration.py`` (which imports these three functions, so
# training, scoring and the MLflow model apply one and the same map). Strictly increasing for
# every fitted method: calibration never reorders customers.
TIE_BREAK = 1e-6
"""Weight of the raw score in the isotonic map: far below any calibration error that matters,
far above float64 resolution for raw scores that differ by more than ~1e-9."""
_LOG_CLIP = 1e-15


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _LOG_CLIP, 1.0 - _LOG_CLIP)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray) -> np.ndarray:
    # exp(-log(1 + e^-z)): accurate in the far tails, where the list's order still matters.
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


def apply_calibration(
    raw_probability: np.ndarray,
    method: str,
    x: tuple[float, ...] | list[float] = (),
    y: tuple[float, ...] | list[float] = (),
    a: float = 1.0,
    b: float = 0.0,
    c: float = 0.0,
    tie_break: float = 0.0,
) -> np.ndarray:
    """Map raw probabilities to calibrated ones; strictly increasing for every fitted method.

    ``tie_break`` is the raw score's weight in an isotonic map (``TIE_BREAK`` for maps fitted
    now); maps stored without it (fitted before ties were broken) keep their plain
    interpolation, so an upgrade never changes what a registered model predicts.
    """
    p = np.asarray(raw_probability, dtype=np.float64)
    if method == "isotonic":
        return (1.0 - tie_break) * np.interp(p, np.asarray(x), np.asarray(y)) + tie_break * p
    if method == "sigmoid":
        return sigmoid(a * logit(p) + b)
    if method == "beta":
        q = np.clip(p, _LOG_CLIP, 1.0 - _LOG_CLIP)
        return sigmoid(a * np.log(q) - b * np.log1p(-q) + c)
    return p


def calibrate(raw_probability: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Apply a calibration map stored as ``Calibrator.to_dict()``."""
    return apply_calibration(raw_probability, spec.get("method", "identity"), spec.get("x", ()), spec.get("y", ()),
                             float(spec.get("a", 1.0)), float(spec.get("b", 0.0)), float(spec.get("c", 0.0)),
                             float(spec.get("tie_break", 0.0)))


# ---- the linear model ----------------------------------------------------------------------
@dataclass(frozen=True)
class LinearModel:
    """A logistic model on encoded features; every number it learned, as plain JSON.

    Encoded column ``j`` comes from source feature ``sources[j]``; ``centre[j]`` is its training
    mean, so a contribution ``coef * (z - centre)`` is the linear model's exact SHAP value and the
    bias is the margin of an average training customer.
    """

    numeric: list[str]
    log1p: list[str]
    medians: dict[str, float]
    indicators: list[str]
    """Numeric features that had missing values in training: they get a 0/1 column."""
    means: dict[str, float]
    scales: dict[str, float]
    levels: dict[str, list[str]]
    columns: list[str]
    sources: list[str]
    coef: list[float]
    centre: list[float]
    intercept: float

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Encoded matrix (n, len(columns)) of a model frame, in ``columns`` order."""
        parts: list[np.ndarray] = []
        for name in self.numeric:
            x = frame[name].to_numpy(dtype=np.float64)
            missing = np.isnan(x)
            x = np.where(missing, self.medians[name], x)
            if name in self.log1p:
                x = np.log1p(np.clip(x, 0, None))
            parts.append((x - self.means[name]) / self.scales[name])
            if name in self.indicators:
                parts.append(missing.astype(np.float64))
        # in column order: ``sources`` is a list, while a saved ``levels`` comes back with sorted keys
        for name in dict.fromkeys(s for s in self.sources if s in self.levels):
            levels = self.levels[name]
            codes = pd.Categorical(frame[name], categories=levels).codes
            parts.extend((codes == i).astype(np.float64) for i in range(len(levels)))
        return np.column_stack(parts) if parts else np.zeros((len(frame), 0))

    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        return self.encode(frame) @ np.asarray(self.coef) + self.intercept

    def contributions(self, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
        """(n, len(features) + 1): encoded columns summed back to their feature; bias last."""
        coef, centre = np.asarray(self.coef), np.asarray(self.centre)
        parts = (self.encode(frame) - centre) * coef
        out = np.zeros((len(frame), len(features) + 1))
        position = {name: i for i, name in enumerate(features)}
        for j, source in enumerate(self.sources):
            out[:, position[source]] += parts[:, j]
        out[:, -1] = self.intercept + float(coef @ centre)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearModel:
        return cls(**data)


# ---- the scorer ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Scorer:
    """Margin, contributions and probability of one churn model of any family."""

    features: list[str]
    categorical_levels: dict[str, list[str]]
    booster: xgb.Booster | None = None
    best_iteration: int = 0
    linear: LinearModel | None = None
    tree_weight: float = 1.0
    """1 = tree only, 0 = linear only, in between = a blend of margins."""
    calibration: dict[str, Any] = field(default_factory=lambda: {"method": "identity"})

    @property
    def family(self) -> str:
        return "tree" if self.linear is None else "linear" if self.booster is None else "blend"

    def frame(self, features: pd.DataFrame) -> pd.DataFrame:
        return model_frame(features, self.features, self.categorical_levels)

    def _tree(self, frame: pd.DataFrame, **kwargs: Any) -> np.ndarray:
        assert self.booster is not None
        return self.booster.predict(
            xgb.DMatrix(frame, enable_categorical=True), iteration_range=(0, self.best_iteration + 1), **kwargs
        )

    def _parts(self, frame: pd.DataFrame, contributions: bool) -> list[tuple[float, np.ndarray]]:
        parts = []
        if self.booster is not None:
            tree = self._tree(frame, pred_contribs=True) if contributions else self._tree(frame, output_margin=True)
            parts.append((self.tree_weight if self.linear is not None else 1.0, tree))
        if self.linear is not None:
            lin = self.linear.contributions(frame, self.features) if contributions else self.linear.margin(frame)
            parts.append((1.0 - self.tree_weight if self.booster is not None else 1.0, lin))
        return parts

    def margin(self, features: pd.DataFrame) -> np.ndarray:
        return sum(w * m for w, m in self._parts(self.frame(features), contributions=False))

    def contributions(self, features: pd.DataFrame) -> np.ndarray:
        """(n, n_features + 1) in margin units, bias last; each row sums to the margin."""
        return sum(w * c for w, c in self._parts(self.frame(features), contributions=True))

    def raw_probability(self, features: pd.DataFrame) -> np.ndarray:
        return sigmoid(self.margin(features))

    def probability(self, features: pd.DataFrame) -> np.ndarray:
        return calibrate(self.raw_probability(features), self.calibration)


def model_spec(family: str, tree_weight: float, best_iteration: int, linear: LinearModel | None,
               fitted_through: str) -> dict[str, Any]:
    """The content of ``model.json``."""
    return {
        "family": family,
        "tree_weight": float(tree_weight),
        "best_iteration": int(best_iteration),
        "linear": linear.to_dict() if linear is not None else None,
        "fitted_through": fitted_through,
    }


def read_model_spec(folder: Path) -> dict[str, Any]:
    """``model.json``; bundles saved before it existed were trees with the iteration in calibrator.json."""
    path = Path(folder) / MODEL_FILE
    if path.exists():
        return json.loads(path.read_text())
    calibration = json.loads((Path(folder) / CALIBRATOR_FILE).read_text())
    return model_spec("tree", 1.0, int(calibration.get("best_iteration", 0)), None, "")


def load_scorer(folder: Path) -> Scorer:
    """The scorer of a saved bundle folder, read from its JSON files only."""
    folder = Path(folder)
    spec = read_model_spec(folder)
    schema = json.loads((folder / SCHEMA_FILE).read_text())
    booster = None
    if spec["family"] != "linear":
        booster = xgb.Booster()
        booster.load_model(folder / BOOSTER_FILE)
    return Scorer(
        features=list(schema["features"]),
        categorical_levels=dict(schema.get("categorical_levels", {})),
        booster=booster,
        best_iteration=int(spec["best_iteration"]),
        linear=LinearModel.from_dict(spec["linear"]) if spec.get("linear") else None,
        tree_weight=float(spec["tree_weight"]),
        calibration=json.loads((folder / CALIBRATOR_FILE).read_text()),
    )


# ---- the MLflow pyfunc ---------------------------------------------------------------------
def _pyfunc_model() -> Any:
    from mlflow.pyfunc import PythonModel

    class ChurnModel(PythonModel):
        """Calibrated churn probabilities (plus ``customer_id`` when given) from a feature table."""

        def load_context(self, context: Any) -> None:
            self.scorer = load_scorer(Path(context.artifacts[BUNDLE_ARTIFACT]))

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            out = pd.DataFrame({"churn_probability": self.scorer.probability(frame)}, index=frame.index)
            if "customer_id" in frame.columns:
                out.insert(0, "customer_id", frame["customer_id"].to_numpy())
            return out

    return ChurnModel()


if not __package__:  # executed by MLflow as the model's code, not imported as training.churn_model
    import mlflow

    mlflow.models.set_model(_pyfunc_model())
