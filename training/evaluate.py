"""Test-snapshot evaluation of the tuned model beside simple baselines on the same rows.

A retention team contacts a fixed number of customers, so beside ranking (ROC-AUC, PR-AUC) and
probability quality (log loss, Brier, ECE) we report lift and recall in the top 5/10/20 %. The
model is only worth deploying when it beats what a careful analyst would build in an afternoon:
"days since last activity", a logistic regression on RFM, a logistic regression on every encoded
feature and a fixed shallow XGBoost, all fitted on the same training rows and scored on the same
test rows. The comparison table, ``beats_recency`` and ``best_baseline``/``beats_best_baseline``
make that explicit; the promotion gate and the CLI read them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.features.spec import name_for
from churnflow.training.bundle import ModelBundle
from churnflow.training.calibration import Calibrator, expected_calibration_error
from churnflow.training.candidates import Choice
from churnflow.training.fit import fit_bundle
from churnflow.training.tune import base_params, direction, label_array

logger = logging.getLogger(__name__)

TOP_FRACTIONS = (0.05, 0.10, 0.20)
RECENCY = name_for("recency")

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# ---- metric primitives ----------------------------------------------------------------------
def top_k_lift_recall(label: np.ndarray, score: np.ndarray, fraction: float) -> tuple[float, float]:
    """Lift and recall of the ``ceil(fraction * n)`` highest-scored rows.

    Lift = churn rate in the top rows / overall churn rate; recall = share of all churners found
    there. Ties are broken by row order (stable sort), which is what a list cut at k rows does.
    """
    y = np.asarray(label, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    n = len(y)
    positives = y.sum()
    if n == 0 or positives == 0:
        return float("nan"), float("nan")
    k = max(1, math.ceil(fraction * n - 1e-9))
    order = np.argsort(-s, kind="stable")
    hits = y[order[:k]].sum()
    return float((hits / k) / (positives / n)), float(hits / positives)


def score_metrics(label: np.ndarray, probability: np.ndarray, score: np.ndarray | None = None) -> dict[str, float]:
    """All test metrics of one model; ``score`` ranks (defaults to the probability)."""
    y = np.asarray(label, dtype=np.float64)
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    s = p if score is None else np.asarray(score, dtype=np.float64)
    two_classes = len(np.unique(y)) == 2
    out: dict[str, float] = {
        "roc_auc": float(roc_auc_score(y, s)) if two_classes else float("nan"),
        "pr_auc": float(average_precision_score(y, s)) if two_classes else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(p, y),
    }
    for frac in TOP_FRACTIONS:
        lift, recall = top_k_lift_recall(y, s, frac)
        pct = round(frac * 100)
        out[f"lift_top{pct}"] = lift
        out[f"recall_top{pct}"] = recall
    return out


def bundle_metrics(bundle: ModelBundle, frame: pd.DataFrame) -> dict[str, float]:
    """Metrics of a bundle's calibrated probabilities, plus the ECE before calibration."""
    raw = bundle.raw_probability(frame)
    y = label_array(frame)
    out = score_metrics(y, bundle.calibrator.transform(raw))
    out["ece_raw"] = expected_calibration_error(raw, y)
    out["log_loss_raw"] = float(log_loss(y, np.clip(raw, 0, 1), labels=[0, 1]))
    return out


def improvement(objective: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old`` on the objective (positive = better)."""
    return new - old if direction(objective) == "maximize" else old - new


def gains_table(label: np.ndarray, score: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Deciles of the ranked list: churners found, churn rate, cumulative recall and lift."""
    y = np.asarray(label, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    base = y.mean() if len(y) else float("nan")
    rows = []
    cum_n = cum_pos = 0.0
    for i, idx in enumerate(np.array_split(order, n_bins), start=1):
        if len(idx) == 0:
            continue
        pos = y[idx].sum()
        cum_n += len(idx)
        cum_pos += pos
        rows.append(
            {
                "decile": i,
                "n": len(idx),
                "churners": int(pos),
                "churn_rate": float(pos / len(idx)),
                "min_score": float(s[idx].min()),
                "max_score": float(s[idx].max()),
                "cum_share": float(cum_n / len(y)),
                "cum_recall": float(cum_pos / y.sum()) if y.sum() else float("nan"),
                "cum_lift": float((cum_pos / cum_n) / base) if base else float("nan"),
            }
        )
    return pd.DataFrame(rows)


# ---- baselines -----------------------------------------------------------------------------
def rfm_columns(frame: pd.DataFrame, schema: FeatureSchema) -> list[str]:
    """Recency, frequency and monetary over the longest window, tenure (those present and not
    empty), found by their roles in the schema."""
    roles = ("recency", "frequency", "monetary", "tenure")
    cols = [schema.feature_for(role) for role in roles]
    return [c for c in cols if c is not None and c in frame.columns and frame[c].notna().any()]


def _recency_score(frame: pd.DataFrame, fill: float) -> np.ndarray:
    # No recorded activity at all is the most inactive a customer can be.
    return pd.to_numeric(frame[RECENCY], errors="coerce").fillna(fill).to_numpy(np.float64)


def recency_baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """Score = recency_days; probabilities from a 1-D logistic regression on the training rows."""
    fill = float(np.nanmax(pd.to_numeric(train[RECENCY], errors="coerce"))) + 1.0
    x_train = _recency_score(train, fill).reshape(-1, 1)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x_train, label_array(train))
    x_test = _recency_score(test, fill)
    proba = model.predict_proba(x_test.reshape(-1, 1))[:, 1]
    return score_metrics(label_array(test), proba, score=x_test)


def logistic_rfm_baseline(train: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Logistic regression on RFM (+ tenure) with imputation and scaling fitted on training rows."""
    return score_metrics(label_array(test), logistic_rfm_probability(train, test, columns))


def logistic_rfm_probability(train: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> np.ndarray:
    model = make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=1000)
    )
    x_train = train[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    model.fit(x_train, label_array(train))
    x_test = test[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    return model.predict_proba(x_test)[:, 1]


# ---- baselines on every encoded feature -------------------------------------------------------
LOGISTIC_ALL_C = 1.0
SHALLOW_XGBOOST = {"max_depth": 3, "learning_rate": 0.05}
SHALLOW_XGBOOST_ROUNDS = 300
SIMPLE_BASELINES = ("logistic_all", "xgboost_shallow")


def baseline_choice(name: str, settings: Settings) -> Choice:
    """A simple baseline as a candidate ``training.fit.fit_bundle`` fits like any other.

    ``logistic_all``: the linear candidate (``training/linear.py``: median imputation + missing
    indicators, log1p of skewed non-negative numbers, standardisation, one-hot levels) with a
    fixed ``C = 1``. ``xgboost_shallow``: depth 3, 300 rounds, learning rate 0.05, no early
    stopping. Both untuned: they are the bar a tuned model has to clear. The out-of-fold arrays
    are empty; a recipe that registers a baseline fits its calibrator on its own folds.
    """
    empty = np.empty(0)
    if name == "logistic_all":
        return Choice(family="linear", tree_weight=0.0, tree_params={}, n_rounds=1, linear_c=LOGISTIC_ALL_C,
                      cv_scores={}, oof_margin=empty, oof_label=empty)
    if name == "xgboost_shallow":
        return Choice(family="tree", tree_weight=1.0, tree_params=base_params(settings) | SHALLOW_XGBOOST,
                      n_rounds=SHALLOW_XGBOOST_ROUNDS, linear_c=0.0, cv_scores={}, oof_margin=empty,
                      oof_label=empty)
    raise ValueError(f"unknown simple baseline {name!r}; choose one of {SIMPLE_BASELINES}")


def fit_simple_baseline(name: str, train: pd.DataFrame, schema: FeatureSchema, settings: Settings) -> ModelBundle:
    """The baseline ``name`` fitted on ``train`` as a bundle (identity calibration): evaluated,
    explained and registrable exactly like the tuned model."""
    return fit_bundle(train, schema, baseline_choice(name, settings), Calibrator(method="identity"))


def simple_baselines(
    train: pd.DataFrame, test: pd.DataFrame, schema: FeatureSchema, settings: Settings
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Metrics and test probabilities of logistic regression on all features and shallow XGBoost.

    Both see the schema's features that the training rows carry.
    """
    y = label_array(test)
    schema = replace(schema, features=[f for f in schema.features if f in train.columns])
    scores = {name: fit_simple_baseline(name, train, schema, settings).predict_proba(test)
              for name in SIMPLE_BASELINES}
    return {name: score_metrics(y, p) for name, p in scores.items()}, scores


SWAP_BOOTSTRAP = 400
SWAP_CONFIDENCE = 0.95


def clearly_better(objective: str, label: np.ndarray, challenger: np.ndarray, incumbent: np.ndarray,
                   seed: int = 0) -> bool:
    """Is ``challenger`` better than ``incumbent`` on the objective beyond test-row noise?

    Paired bootstrap of the test rows (both scored on the same resample): True when the
    challenger's advantage is positive in ``SWAP_CONFIDENCE`` of the resamples. On a test part of
    a few hundred rows two models within about 0.01 ROC-AUC of each other trade places from one
    split to the next (measured on the attrition table: a baseline "won" on 2 of 5 training
    folds and then lost on the held-out fold both times); only a clear win says more than that.
    """
    y = np.asarray(label, dtype=np.float64)
    new, old = np.asarray(challenger, dtype=np.float64), np.asarray(incumbent, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return False
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(SWAP_BOOTSTRAP):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) < 2:
            continue
        pair = [objective_value(objective, y[idx], s[idx]) for s in (new, old)]
        wins += improvement(objective, pair[0], pair[1]) > 0
    return wins >= SWAP_CONFIDENCE * SWAP_BOOTSTRAP


def objective_value(objective: str, label: np.ndarray, score: np.ndarray) -> float:
    """The objective alone (no lift tables): what a bootstrap resample needs."""
    if objective == "roc_auc":
        return float(roc_auc_score(label, score))
    if objective == "pr_auc":
        return float(average_precision_score(label, score))
    return float(log_loss(label, np.clip(score, 1e-15, 1 - 1e-15), labels=[0, 1]))


def best_baseline(objective: str, baselines: dict[str, dict[str, float]]) -> str | None:
    """Name of the baseline with the best objective value (None when there is none)."""
    ranked = [(name, m[objective]) for name, m in baselines.items() if not math.isnan(m.get(objective, math.nan))]
    if not ranked:
        return None
    sign = 1.0 if direction(objective) == "maximize" else -1.0
    return max(ranked, key=lambda item: sign * item[1])[0]


# ---- the evaluation -------------------------------------------------------------------------
@dataclass
class Evaluation:
    objective: str
    metrics: dict[str, float]
    """The tuned model on the test rows (calibrated probabilities; ``ece_raw`` before)."""
    baselines: dict[str, dict[str, float]]
    comparison: pd.DataFrame
    """Index: metric; columns: each model's value and ``tuned_minus_<baseline>``."""
    beats_recency: bool
    gains: pd.DataFrame
    n_test: int
    churn_rate: float
    best_baseline: str | None = None
    """The baseline with the best objective value on the same test rows."""
    beats_best_baseline: bool = True
    """The model is at least as good as ``best_baseline`` on the objective (True without one)."""
    baseline_clearly_better: bool = False
    """``best_baseline`` beat the model beyond test-row noise (``clearly_better``)."""
    notes: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Test-row scores in test-row order: ``model`` (calibrated probability) and each baseline's
    ranking score (recency: days since last activity; the others: probabilities). Not in
    ``to_dict``; for benchmarks and paired comparisons on the same rows."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (metrics.json in the bundle, read by the serving report)."""
        return {
            "objective": self.objective,
            "test": self.metrics,
            "baselines": self.baselines,
            "beats_recency": self.beats_recency,
            "best_baseline": self.best_baseline,
            "beats_best_baseline": self.beats_best_baseline,
            "baseline_clearly_better": self.baseline_clearly_better,
            "verdict": self.verdict,
            "gains": self.gains.to_dict(orient="records"),
            "n_test": self.n_test,
            "churn_rate": self.churn_rate,
            "notes": self.notes,
        }

    @property
    def verdict(self) -> str:
        """One line for the CLI and the report: does the model beat the best simple model?"""
        if self.best_baseline is None:
            return "no baseline could be computed"
        ours = self.metrics[self.objective]
        theirs = self.baselines[self.best_baseline][self.objective]
        if self.beats_best_baseline:
            return (
                f"the model beats every baseline on {self.objective}: {ours:.4f} vs "
                f"{theirs:.4f} ({self.best_baseline}, the best of them)"
            )
        noise = "beyond" if self.baseline_clearly_better else "but within"
        return (
            f"BASELINE WINS: {self.best_baseline} reaches {self.objective} {theirs:.4f} on the "
            f"same test rows, the model only {ours:.4f} ({noise} test-row noise): a simpler model "
            "does better on the objective"
        )


def fit_baselines(bundle: ModelBundle, train: pd.DataFrame, test: pd.DataFrame, settings: Settings,
                  baseline: ModelBundle | None = None
                  ) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray], list[str]]:
    """Every baseline fitted on ``train`` and scored on ``test``: metrics, test scores, notes.

    Recency and logistic RFM need their features (skipped with a note otherwise); logistic
    regression on all features and the shallow XGBoost run on every dataset.
    """
    y = label_array(test)
    notes: list[str] = []
    baselines: dict[str, dict[str, float]] = {}
    baseline_scores: dict[str, np.ndarray] = {}

    if RECENCY in test.columns and RECENCY in train.columns:
        baselines["recency"] = recency_baseline(train, test)
        fill = float(np.nanmax(pd.to_numeric(train[RECENCY], errors="coerce"))) + 1.0
        baseline_scores["recency"] = _recency_score(test, fill)
    else:
        notes.append(f"recency baseline skipped: no '{RECENCY}' feature (snapshot table?)")
    cols = rfm_columns(train, bundle.schema)
    if cols:
        baseline_scores["logistic_rfm"] = logistic_rfm_probability(train, test, cols)
        baselines["logistic_rfm"] = score_metrics(y, baseline_scores["logistic_rfm"])
        notes.append(f"logistic_rfm uses {cols}")
    else:
        notes.append("logistic RFM baseline skipped: no RFM columns")
    simple, simple_scores = simple_baselines(train, test, bundle.schema, settings)
    baselines |= simple
    baseline_scores |= simple_scores
    if baseline is not None:
        baselines["xgboost_untuned"] = bundle_metrics(baseline, test)
        baseline_scores["xgboost_untuned"] = baseline.predict_proba(test)
    return baselines, baseline_scores, notes


def evaluate(
    bundle: ModelBundle,
    train: pd.DataFrame,
    test: pd.DataFrame,
    settings: Settings,
    *,
    baseline: ModelBundle | None = None,
    plot_dir: Path | None = None,
    fitted_baselines: tuple[dict[str, dict[str, float]], dict[str, np.ndarray], list[str]] | None = None,
) -> Evaluation:
    """Evaluate the tuned bundle and the baselines on the same test rows; optionally plot.

    ``fitted_baselines``: :func:`fit_baselines`' output for the same rows, when already computed
    (a second model judged against the same baselines need not refit them).

    Baselines (all fitted on ``train``): recency, logistic RFM, logistic regression on all encoded
    features, a fixed shallow XGBoost, and the untuned bundle when given. ``beats_recency``
    compares the objective metric with the recency baseline; when the data have no recency feature
    (snapshot tables) the check cannot be made and is recorded as passed with a note.
    ``best_baseline``/``beats_best_baseline`` compare with the best of them, and a note says so
    loudly when a baseline wins.
    """
    objective = settings.training.objective
    y = label_array(test)
    metrics = bundle_metrics(bundle, test)
    proba = bundle.predict_proba(test)
    baselines, baseline_scores, notes = fitted_baselines or fit_baselines(bundle, train, test, settings, baseline)
    baselines, baseline_scores, notes = dict(baselines), dict(baseline_scores), list(notes)

    table = pd.DataFrame({"tuned": metrics} | {k: v for k, v in baselines.items()})
    table = table.assign(**{f"tuned_minus_{name}": table["tuned"] - table[name] for name in baselines})
    if "recency" in baselines:
        beats = improvement(objective, metrics[objective], baselines["recency"][objective]) > 0
    else:
        beats = True
    best = best_baseline(objective, baselines)
    beats_best = best is None or improvement(objective, metrics[objective], baselines[best][objective]) >= 0
    clearly = (not beats_best and best in baseline_scores
               and clearly_better(objective, y, baseline_scores[best], proba, settings.training.seed))
    gains = gains_table(y, proba)
    ev = Evaluation(
        objective=objective,
        metrics=metrics,
        baselines=baselines,
        comparison=table,
        beats_recency=bool(beats),
        gains=gains,
        n_test=len(test),
        churn_rate=float(y.mean()) if len(y) else float("nan"),
        best_baseline=best,
        beats_best_baseline=bool(beats_best),
        baseline_clearly_better=bool(clearly),
        notes=notes,
        scores={"model": proba} | baseline_scores,
    )
    if not ev.beats_best_baseline:
        ev.notes.insert(0, ev.verdict)
        logger.warning(ev.verdict)
    if plot_dir is not None:
        ev.plots = evaluation_plots(bundle, test, ev.scores, Path(plot_dir))
    return ev


def evaluation_plots(bundle: ModelBundle, test: pd.DataFrame, scores: dict[str, np.ndarray],
                     plot_dir: Path) -> dict[str, Path]:
    """The run's two pictures: calibration before/after the map, and gains of every model."""
    y, proba = label_array(test), scores["model"]
    gains = {"tuned": proba} | {k: v for k, v in scores.items() if k != "model"}
    return {
        "calibration": plot_calibration(y, bundle.raw_probability(test), proba, plot_dir / "calibration.png"),
        "gains": plot_gains(y, gains, plot_dir / "gains.png"),
    }


def attach_metrics(bundle: ModelBundle, evaluation: Evaluation) -> ModelBundle:
    """A copy of the (frozen) bundle with the evaluation summary as its metrics.json."""
    return replace(bundle, metrics=evaluation.to_dict())


# ---- plots ----------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    """A figure of its own (no pyplot state, no global backend switch)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def plot_calibration(label: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, path: Path) -> Path:
    """Reliability curve before and after calibration (quantile bins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = _figure(5, 5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    for name, p in (("raw booster", raw), ("calibrated", calibrated)):
        true, pred = calibration_curve(label, np.clip(p, 0, 1), n_bins=10, strategy="quantile")
        ax.plot(pred, true, "o-", label=f"{name} (ECE {expected_calibration_error(p, label):.3f})")
    ax.set_xlabel("predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.set_title("Calibration on the test snapshot")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_gains(label: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    """Cumulative gains: share of churners found when contacting the top x % of the list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    y = np.asarray(label, dtype=np.float64)
    fig = _figure(6, 5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k:", label="random")
    for name, s in scores.items():
        order = np.argsort(-np.asarray(s, dtype=np.float64), kind="stable")
        found = np.concatenate([[0.0], np.cumsum(y[order]) / max(y.sum(), 1)])
        share = np.arange(len(y) + 1) / max(len(y), 1)
        ax.plot(share, found, label=name)
    ax.set_xlabel("share of customers contacted (highest risk first)")
    ax.set_ylabel("share of churners reached")
    ax.set_title("Cumulative gains on the test snapshot")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
