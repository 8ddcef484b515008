"""MLflow tracking, model registration and the champion/challenger promotion gate.

All MLflow I/O of training lives here. One parent run records everything needed to audit a model
(settings, data fingerprint, as-of dates, tuned params, metrics beside baselines, plots, the
feature dictionary, every Optuna trial as a nested run). The model is logged as a pyfunc from code
(``training/churn_model.py``) with the bundle's JSON files and registered as a new version with the
alias ``challenger``. It becomes ``champion`` only when it beats the recency baseline and beats the
current champion, scored on the same test rows, by ``training.promotion_margin``; the decision and
its numbers are stored as tags on the version, so "why is this the champion?" has an answer.

Nothing here logs data values: only metrics, parameters, column names and plots of feature
effects. PII columns are never features (see ``explain.behavioural_checks``).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from xgboost.core import XGBoostError

import features as _features_pkg
import training as _training_pkg
from features.errors import ChurnflowError
from features.io import ensure_sqlite_folder, write_json
from features.settings import Settings
from training.bundle import ModelBundle
from training.evaluate import Evaluation, bundle_metrics, improvement
from training.split import SplitPlan
from training.tune import TuneResult

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_FILE = Path(__file__).with_name("churn_model.py")
MODEL_NAME_IN_RUN = "model"


class NoChampionError(ChurnflowError, LookupError):
    """No model version carries the champion alias yet."""


@dataclass
class RegistryResult:
    run_id: str
    version: str
    promoted: bool
    decision: str
    """"promoted" or "rejected"."""
    reason: str
    objective: str
    challenger_metric: float
    champion_metric: float | None
    champion_version: str | None
    metrics: dict[str, float] = field(default_factory=dict)


# ---- setup ----------------------------------------------------------------------------------
def setup_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured store and return the experiment id (created if missing).

    The experiment's artifact location is set explicitly, otherwise artifacts land relative to the
    current directory instead of under ``mlruns/``.
    """
    uri = settings.tracking_uri
    ensure_sqlite_folder(uri)
    if settings.artifact_location.startswith("file:"):
        settings.path(settings.tracking.artifact_location).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = settings.tracking.experiment
    exp = mlflow.get_experiment_by_name(name)
    exp_id = (
        exp.experiment_id
        if exp is not None
        else mlflow.create_experiment(name, artifact_location=settings.artifact_location)
    )
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def pip_requirements() -> list[str]:
    """Pinned to the versions installed here; xgboost-cpu (no CUDA) when that is what we run."""
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    xgb_dist = "xgboost-cpu" if version("xgboost-cpu") else "xgboost"
    reqs = [f"{xgb_dist}=={version(xgb_dist)}"]
    for dist in ("pandas", "numpy", "scikit-learn", "mlflow"):
        v = version(dist)
        reqs.append(f"{dist}=={v}" if v else dist)
    return reqs


def code_paths() -> list[str]:
    """The project packages the pyfunc imports, shipped with the model."""
    return [str(Path(_features_pkg.__file__).parent), str(Path(_training_pkg.__file__).parent)]


# ---- helpers --------------------------------------------------------------------------------
def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = json.dumps(value, default=str) if isinstance(value, list | tuple) else str(value)
    return out


def _log_params(params: dict[str, str]) -> None:
    items = list(params.items())
    for i in range(0, len(items), 90):  # MLflow caps a batch at 100 params
        mlflow.log_params({k: v[:6000] for k, v in items[i : i + 90]})


def _finite(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float | np.floating) and math.isfinite(float(v))
    }


def _log_trials(tune_result: TuneResult) -> None:
    """Every Optuna trial as a nested run (params, value, state; pruned ones tagged)."""
    for t in tune_result.study.get_trials(deepcopy=False):
        with mlflow.start_run(run_name=f"trial-{t.number:03d}", nested=True):
            mlflow.log_params({k: str(v) for k, v in t.params.items()})
            tags = {"trial_number": str(t.number), "state": t.state.name}
            if t.state.name == "PRUNED":
                tags["pruned"] = "true"
            mlflow.set_tags(tags)
            if t.value is not None:
                mlflow.log_metric("value", float(t.value))
            if "best_iteration" in t.user_attrs:
                mlflow.log_metric("best_iteration", float(t.user_attrs["best_iteration"]))


# ---- the gate -------------------------------------------------------------------------------
def _champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def decide_promotion(
    settings: Settings,
    evaluation: Evaluation,
    test: pd.DataFrame,
    champion_version: str | None,
) -> tuple[bool, str, float | None]:
    """Return (promote, reason, champion_metric) for a challenger evaluated on ``test``."""
    objective = settings.training.objective
    ours = float(evaluation.metrics[objective])
    champ_metric: float | None = None
    if not evaluation.beats_recency:
        rec = evaluation.baselines.get("recency", {}).get(objective, float("nan"))
        return False, f"does not beat the recency baseline on {objective} ({ours:.4f} vs {rec:.4f})", None
    if champion_version is None:
        return True, "no champion yet", None
    try:
        champion, _ = load_bundle(settings, champion_version)
        champ_metric = float(bundle_metrics(champion, test)[objective])
    except (ValueError, KeyError, OSError, MlflowException, XGBoostError) as exc:
        # SchemaMismatchError (a ValueError) when features changed; missing/corrupt artifacts.
        return True, f"champion v{champion_version} cannot score today's features: {exc}"[:4900], None
    gain = improvement(objective, ours, champ_metric)
    margin = settings.training.promotion_margin
    if gain > 0 and gain >= margin:
        return True, f"beats champion v{champion_version} on {objective} by {gain:.4f} (margin {margin})", champ_metric
    return (
        False,
        f"does not beat champion v{champion_version} on {objective} by the margin {margin} "
        f"({ours:.4f} vs {champ_metric:.4f})",
        champ_metric,
    )


# ---- logging + registration ----------------------------------------------------------------
def log_and_register(
    settings: Settings,
    bundle: ModelBundle,
    evaluation: Evaluation,
    test: pd.DataFrame,
    *,
    tune_result: TuneResult | None = None,
    plan: SplitPlan | None = None,
    fingerprint: dict[str, Any] | None = None,
    importance: pd.DataFrame | None = None,
    checks: list[tuple[str, bool, str]] | None = None,
    plots: dict[str, Path] | None = None,
    run_name: str | None = None,
) -> RegistryResult:
    """Log the training run, register the model as a new version and apply the promotion gate.

    ``test`` must be the rows ``evaluation`` was computed on: the champion is scored on them.
    """
    setup_mlflow(settings)
    client = MlflowClient()
    name = settings.tracking.model_name
    objective = settings.training.objective
    all_plots = dict(evaluation.plots) | dict(plots or {})

    with tempfile.TemporaryDirectory(prefix="churnflow-") as tmp_str, mlflow.start_run(run_name=run_name) as run:
        tmp = Path(tmp_str)
        params = flatten(settings.public_dict(), "settings.")
        if plan is not None:
            params |= flatten(plan.to_dict(), "as_of.")
        if fingerprint:
            params |= flatten(fingerprint, "data.")
        if tune_result is not None:
            params |= {f"best.{k}": str(v) for k, v in tune_result.best_params.items()}
            params["best.best_iteration"] = str(tune_result.best_iteration)
        _log_params(params)

        metrics = _finite(evaluation.metrics, "test.")
        for base_name, values in evaluation.baselines.items():
            metrics |= _finite(values, f"baseline.{base_name}.")
        if tune_result is not None:
            metrics["tune.best_value"] = tune_result.best_value
            metrics["tune.n_trials"] = float(len(tune_result.trials))
        metrics["test.n_rows"] = float(evaluation.n_test)
        metrics["test.churn_rate"] = evaluation.churn_rate
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                "objective": objective,
                "beats_recency": str(evaluation.beats_recency).lower(),
                "out_of_time": str(plan.out_of_time if plan else "unknown").lower(),
            }
        )

        reports = tmp / "reports"
        reports.mkdir()
        evaluation.comparison.to_csv(reports / "comparison.csv")
        evaluation.gains.to_csv(reports / "gains.csv", index=False)
        write_json(reports / "evaluation.json", evaluation.to_dict())
        write_json(reports / "feature_dictionary.json", bundle.dictionary)
        write_json(reports / "schema.json", bundle.schema.to_dict())
        if fingerprint:
            write_json(reports / "data_fingerprint.json", fingerprint)
        if plan is not None:
            write_json(reports / "as_of_dates.json", plan.to_dict())
        if tune_result is not None:
            tune_result.trials.to_csv(reports / "trials.csv", index=False)
        if importance is not None:
            importance.to_csv(reports / "shap_importance.csv", index=False)
        if checks is not None:
            write_json(reports / "behavioural_checks.json", [{"name": n, "passed": p, "detail": d} for n, p, d in checks])
            mlflow.log_metrics({f"check.{n}": float(p) for n, p, _ in checks})
        mlflow.log_artifacts(str(reports), artifact_path="reports")
        for path in all_plots.values():
            mlflow.log_artifact(str(path), artifact_path="plots")
        if tune_result is not None:
            _log_trials(tune_result)

        bundle_dir = bundle.save(tmp / "bundle")
        # No signature on purpose: MLflow's inferred one turns categories into strings and then
        # rejects them (docs STACK.md); the bundle's FeatureSchema checks and coerces the input.
        # No input example either: it would store customer rows in the registry.
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(MODEL_FILE),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=code_paths(),
            pip_requirements=pip_requirements(),
            registered_model_name=name,
        )
        version = str(info.registered_model_version)
        run_id = run.info.run_id

        client.set_registered_model_alias(name, CHALLENGER, version)
        champion_version = _champion_version(client, name)
        promote, reason, champ_metric = decide_promotion(settings, evaluation, test, champion_version)
        if promote:
            client.set_registered_model_alias(name, CHAMPION, version)
        decision = "promoted" if promote else "rejected"
        tags = {
            "decision": decision,
            "reason": reason,
            "objective": objective,
            "challenger_metric": f"{evaluation.metrics[objective]:.6f}",
            "champion_metric": "" if champ_metric is None else f"{champ_metric:.6f}",
            "champion_version": champion_version or "",
            "beats_recency": str(evaluation.beats_recency).lower(),
            "run_id": run_id,
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        mlflow.set_tags({f"gate.{k}": v for k, v in tags.items() if k != "run_id"} | {"model_version": version})
        logger.info("registered %s v%s: %s (%s)", name, version, decision, reason)

    return RegistryResult(
        run_id=run_id,
        version=version,
        promoted=promote,
        decision=decision,
        reason=reason,
        objective=objective,
        challenger_metric=float(evaluation.metrics[objective]),
        champion_metric=champ_metric,
        champion_version=champion_version,
        metrics=metrics,
    )


# ---- loading --------------------------------------------------------------------------------
def load_bundle(settings: Settings, version: str | None = None) -> tuple[ModelBundle, str]:
    """The champion's (or a given version's) ModelBundle and its version number."""
    setup_mlflow(settings)
    client = MlflowClient()
    name = settings.tracking.model_name
    if version is None:
        version = _champion_version(client, name)
        if version is None:
            raise NoChampionError(
                f"no champion model registered under '{name}' in {settings.tracking_uri}; "
                "run `churnflow train` first"
            )
    with tempfile.TemporaryDirectory(prefix="churnflow-bundle-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp)
        )
        return ModelBundle.load(local / "artifacts" / "bundle"), str(version)
