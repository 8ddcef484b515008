"""MLflow tracking, model registration and the champion/challenger promotion gate.

All MLflow I/O of training lives here, through an ``MlflowClient`` bound to the settings' store
(``registry_client``): nothing sets a process-wide tracking URI or active experiment, so a
session, a test and a server can each use their own store in one process.

One parent run records what is needed to audit a model: settings, data fingerprint, as-of dates,
tuned parameters, metrics beside the baselines, plots, the feature dictionary, the training and
test snapshots as MLflow datasets (column schema, row count and digest; no values) and every
Optuna trial as a nested run. The model is a pyfunc from code (``training/churn_model.py``, a
self-contained file: no ``code_paths``, so no churnflow package lands on a model server's
``sys.path``) with the bundle's JSON files, a signature and a synthetic input example (each
numeric feature's median, each category's first level: never a customer's row), registered as a
new version with the alias ``challenger``.

The promotion gate (``decide_promotion``), in order:

1. The challenger is judged by its held-out evaluation (``Evaluation.metrics``: the model that
   never saw the test rows), never by a refit that did.
2. It must beat the recency baseline on the objective, else it is rejected.
3. With no champion it is promoted.
4. The champion is never judged on rows it was fitted on. Its bundle records ``fitted_through``,
   the last as-of date whose labels it used. When those labels end before the challenger's test
   snapshot starts (``fitted_through + horizon <= first test as-of``), the champion is re-scored
   on the challenger's test rows: the same rows for both. Otherwise (it was refit on data that
   include those rows, or on "all rows" of a snapshot table) the challenger is compared with the
   champion's own recorded held-out metric, and the reason says so. A bundle without the record
   (trained before refitting existed) was fitted on snapshots before its own test date only and is
   re-scored.
5. The challenger is promoted when better by at least ``training.promotion_margin``; a champion
   that cannot score today's features is replaced.

The decision and its numbers are tags on the version, so "why is this the champion?" has an
answer. Nothing here logs data values: only metrics, parameters, column names and plots of
feature effects. PII columns are never features (see ``explain.behavioural_checks``).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import DatasetInput, InputTag, LoggedModelOutput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.types.schema import AnyType, ColSpec, Schema
from xgboost.core import XGBoostError

from churnflow.features.errors import ChurnflowError
from churnflow.features.io import ensure_sqlite_folder, write_json
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.bundle import ModelBundle
from churnflow.training.evaluate import Evaluation, bundle_metrics, improvement
from churnflow.training.split import SplitPlan
from churnflow.training.tune import TuneResult

if TYPE_CHECKING:
    from churnflow.training.recipe import TrainedModel

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_FILE = Path(__file__).with_name("churn_model.py")
MODEL_NAME_IN_RUN = "model"
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""The MLflow 3 UI opens experiments of this kind on their runs (not on GenAI traces)."""
PARENT_RUN = "mlflow.parentRunId"
DATASET_CONTEXT = "mlflow.data.context"


class NoChampionError(ChurnflowError, LookupError):
    """No model version carries the champion alias yet."""


class ModelVersionNotFoundError(ChurnflowError, LookupError):
    """The requested model version is not in the registry."""


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


# ---- the store ------------------------------------------------------------------------------
def registry_client(settings: Settings) -> MlflowClient:
    """A client bound to the settings' tracking and registry store (no process-wide URI)."""
    uri = settings.tracking_uri
    ensure_sqlite_folder(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, settings: Settings) -> str:
    """The configured experiment's id, created if missing and marked as model training.

    The artifact location is set explicitly, otherwise artifacts land relative to the current
    directory instead of under ``mlruns/``. The ``mlflow.experimentKind`` tag makes the MLflow 3
    UI open the experiment on its training runs rather than on the GenAI traces page.
    """
    if settings.artifact_location.startswith("file:"):
        settings.path(settings.tracking.artifact_location).mkdir(parents=True, exist_ok=True)
    name = settings.tracking.experiment
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=settings.artifact_location,
                                        tags={EXPERIMENT_KIND: MODEL_TRAINING})
    if exp.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return exp.experiment_id


def pip_requirements() -> list[str]:
    """Pinned to the versions installed here; xgboost-cpu (no CUDA) when that is what we run."""
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    xgb_dist = "xgboost-cpu" if version("xgboost-cpu") else "xgboost"
    reqs = [f"{xgb_dist}=={version(xgb_dist)}"]
    for dist in ("pandas", "numpy", "mlflow"):  # all that training/churn_model.py imports
        v = version(dist)
        reqs.append(f"{dist}=={v}" if v else dist)
    return reqs


# ---- run contents ---------------------------------------------------------------------------
def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = json.dumps(value, default=str) if isinstance(value, list | tuple) else str(value)
    return out


def _finite(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float | np.floating) and math.isfinite(float(v))
    }


def run_params(settings: Settings, plan: SplitPlan | None, fingerprint: dict[str, Any] | None,
               tune_result: TuneResult | None) -> dict[str, str]:
    """Settings, as-of dates, data fingerprint and tuned parameters as flat MLflow params."""
    params = flatten(settings.public_dict(), "settings.")
    if plan is not None:
        params |= flatten(plan.to_dict(), "as_of.")
    if fingerprint:
        params |= flatten(fingerprint, "data.")
    if tune_result is not None:
        params |= {f"best.{k}": str(v) for k, v in tune_result.best_params.items()}
        params["best.best_iteration"] = str(tune_result.best_iteration)
    return {k: v[:6000] for k, v in params.items()}


def run_metrics(evaluation: Evaluation, tune_result: TuneResult | None,
                checks: list[tuple[str, bool, str]] | None) -> dict[str, float]:
    """Held-out test metrics, each baseline's, tuning totals and behavioural checks (1 = pass)."""
    metrics = _finite(evaluation.metrics, "test.")
    for base_name, values in evaluation.baselines.items():
        metrics |= _finite(values, f"baseline.{base_name}.")
    if tune_result is not None:
        metrics["tune.best_value"] = float(tune_result.best_value)
        metrics["tune.n_trials"] = float(len(tune_result.trials))
    metrics["test.n_rows"] = float(evaluation.n_test)
    metrics["test.churn_rate"] = float(evaluation.churn_rate)
    metrics |= {f"check.{n}": float(p) for n, p, _ in checks or []}
    return metrics


def _log_batch(client: MlflowClient, run_id: str, params: dict[str, str] | None = None,
               metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> None:
    """Params, metrics and tags in batches under MLflow's per-call limits (100 params)."""
    params_list = [Param(k, v) for k, v in (params or {}).items()]
    metric_list = [Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items()]
    tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    for i in range(0, max(len(params_list), 1), 90):
        client.log_batch(run_id, params=params_list[i:i + 90], metrics=metric_list if i == 0 else [],
                         tags=tag_list if i == 0 else [])


def write_reports(folder: Path, bundle: ModelBundle, evaluation: Evaluation, *,
                  tune_result: TuneResult | None = None, plan: SplitPlan | None = None,
                  fingerprint: dict[str, Any] | None = None, importance: pd.DataFrame | None = None,
                  checks: list[tuple[str, bool, str]] | None = None) -> Path:
    """The run's ``reports/`` files: comparison, gains, evaluation, dictionary, schema, trials…"""
    folder.mkdir(parents=True, exist_ok=True)
    evaluation.comparison.to_csv(folder / "comparison.csv")
    evaluation.gains.to_csv(folder / "gains.csv", index=False)
    write_json(folder / "evaluation.json", evaluation.to_dict())
    write_json(folder / "feature_dictionary.json", bundle.dictionary)
    write_json(folder / "schema.json", bundle.schema.to_dict())
    if fingerprint:
        write_json(folder / "data_fingerprint.json", fingerprint)
    if plan is not None:
        write_json(folder / "as_of_dates.json", plan.to_dict())
    if tune_result is not None:
        tune_result.trials.to_csv(folder / "trials.csv", index=False)
    if importance is not None:
        importance.to_csv(folder / "shap_importance.csv", index=False)
    if checks is not None:
        write_json(folder / "behavioural_checks.json", [{"name": n, "passed": p, "detail": d} for n, p, d in checks])
    return folder


def _log_trials(client: MlflowClient, exp_id: str, parent_run_id: str, tune_result: TuneResult) -> None:
    """Every Optuna trial as a nested run (params, value, state; pruned ones tagged), once."""
    if client.search_runs([exp_id], filter_string=f"tags.`{PARENT_RUN}` = '{parent_run_id}'", max_results=1):
        return  # logged by an earlier try of this run
    for t in tune_result.study.get_trials(deepcopy=False):
        tags = {PARENT_RUN: parent_run_id, "trial_number": str(t.number), "state": t.state.name}
        if t.state.name == "PRUNED":
            tags["pruned"] = "true"
        run = client.create_run(exp_id, run_name=f"trial-{t.number:03d}", tags=tags)
        metrics = {"value": float(t.value)} if t.value is not None else {}
        if "best_iteration" in t.user_attrs:
            metrics["best_iteration"] = float(t.user_attrs["best_iteration"])
        _log_batch(client, run.info.run_id, {k: str(v) for k, v in t.params.items()}, metrics)
        client.set_terminated(run.info.run_id, "FINISHED")


def snapshot_dataset(frame: pd.DataFrame, schema: FeatureSchema, name: str) -> Any:
    """An MLflow dataset of a snapshot: its features and label, never ids or personal columns.

    MLflow stores the column schema, the row count and a digest of the rows, not the values.
    """
    columns = [c for c in [*schema.features, "label"] if c in frame.columns]
    snapshot = frame[columns].astype({"label": "float64"}) if "label" in columns else frame[columns]
    return mlflow.data.from_pandas(snapshot, name=name, targets="label" if "label" in columns else None)


def _log_datasets(client: MlflowClient, run_id: str, schema: FeatureSchema,
                  snapshots: dict[str, pd.DataFrame | None]) -> None:
    inputs = [
        DatasetInput(snapshot_dataset(frame, schema, f"{context}_snapshot")._to_mlflow_entity(),
                     [InputTag(DATASET_CONTEXT, context)])
        for context, frame in snapshots.items() if frame is not None and len(frame)
    ]
    if inputs:
        client.log_inputs(run_id, datasets=inputs)


# ---- the model ------------------------------------------------------------------------------
def input_example(schema: FeatureSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """One synthetic row for the model's input example: never a customer's row.

    Numeric features take their median over ``frame`` (0 when it has none), categories their
    first known level.
    """
    row: dict[str, Any] = {}
    for name in schema.features:
        if name in schema.categorical_levels:
            levels = schema.categorical_levels[name]
            row[name] = str(levels[0]) if levels else ""
        else:
            values = pd.to_numeric(frame[name], errors="coerce") if name in frame else pd.Series(dtype="float64")
            median = float(values.median()) if values.notna().any() else 0.0
            row[name] = median
    return pd.DataFrame([row])


def model_signature(schema: FeatureSchema, example: pd.DataFrame, output: pd.DataFrame) -> ModelSignature:
    """Inputs: the features in training order; numeric ones as doubles, categories as strings or
    pandas categories (``any``: MLflow's string check rejects categories), and an optional
    ``customer_id`` echoed in the output. Output: the calibrated churn probability."""
    inferred = infer_signature(example, output)
    numeric = {c.name: c for c in inferred.inputs.inputs}
    columns = [ColSpec(AnyType(), name) if name in schema.categorical_levels else numeric[name]
               for name in schema.features]
    columns.append(ColSpec(AnyType(), "customer_id", required=False))
    return ModelSignature(inputs=Schema(columns), outputs=inferred.outputs)


def _log_model(client: MlflowClient, exp_id: str, run_id: str, bundle: ModelBundle,
               example: pd.DataFrame) -> tuple[str, str]:
    """Save the pyfunc locally, upload it as a LoggedModel of the run; returns its id and location."""
    model = client.create_logged_model(exp_id, name=MODEL_NAME_IN_RUN, source_run_id=run_id,
                                       model_type="churn")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    output = pd.DataFrame({"churn_probability": bundle.predict_proba(example)})
    with tempfile.TemporaryDirectory(prefix="churnflow-model-") as tmp:
        mlflow.pyfunc.save_model(
            path=str(Path(tmp) / "model"),
            python_model=str(MODEL_FILE),
            artifacts={"bundle": str(bundle.save(Path(tmp) / "bundle"))},
            pip_requirements=pip_requirements(),
            signature=model_signature(bundle.schema, example, output),
            input_example=example,
            mlflow_model=Model(artifact_path=model.artifact_location, model_uuid=model.model_id,
                               run_id=run_id, model_id=model.model_id),
        )
        client.log_model_artifacts(model.model_id, str(Path(tmp) / "model"))
    client.finalize_logged_model(model.model_id, "READY")
    return model.model_id, model.artifact_location


def _register_version(client: MlflowClient, name: str, model_id: str, location: str, run_id: str) -> str:
    """A new version of ``name`` for the logged model, with the alias ``challenger``.

    The source is the model's storage location, not ``models:/<id>``: MLflow resolves the latter
    with the process-wide tracking URI, which library code never sets.
    """
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=location, run_id=run_id, model_id=model_id)
    client.set_registered_model_alias(name, CHALLENGER, str(version.version))
    return str(version.version)


def _model_version(client: MlflowClient, exp_id: str, run_id: str, name: str, bundle: ModelBundle,
                   test: pd.DataFrame) -> str:
    """The run's model version: looked up first (an earlier try of this run registered it), else
    the model is logged and registered now."""
    earlier = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if earlier:
        client.set_registered_model_alias(name, CHALLENGER, str(earlier[0].version))
        return str(earlier[0].version)
    model_id, location = _log_model(client, exp_id, run_id, bundle, input_example(bundle.schema, test))
    return _register_version(client, name, model_id, location, run_id)


REGISTRATION_KEY = "churnflow.registration_key"
"""Run tag: one key per registration attempt (the train flow run's id), so a retry finds its run."""


def _start_run(client: MlflowClient, exp_id: str, run_name: str | None, key: str | None) -> str:
    """The MLflow run of this registration: a new one, or, when an earlier try with the same
    ``key`` failed part-way (a retried task), that run again, so the retry registers no second
    version (``_register_version`` looks the run's version up first)."""
    if key:
        earlier = client.search_runs([exp_id], filter_string=f"tags.`{REGISTRATION_KEY}` = '{key}'", max_results=1)
        if earlier:
            run_id = earlier[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            return run_id
    tags = resolve_tags() | ({REGISTRATION_KEY: key} if key else {})
    # resolve_tags: user, source script and git commit, as the fluent API would record them
    return client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id


# ---- the gate -------------------------------------------------------------------------------
def _champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def fitted_on_test_rows(champion: ModelBundle, test: pd.DataFrame, horizon_days: int) -> bool:
    """True when the champion may have been fitted on (the labels of) the challenger's test rows.

    See rule 4 of the module docstring: re-scoring is fair only when the labels the champion was
    fitted on end before the first test as-of date.
    """
    fitted = str(getattr(champion, "fitted_through", "") or "")
    if not fitted:
        return False  # trained before refitting existed: fitted before its own test date only
    through = pd.to_datetime(fitted, errors="coerce")
    if pd.isna(through) or "as_of" not in test.columns:
        return True  # "all rows" of a snapshot table, or a test set without dates
    first_test = pd.Timestamp(test["as_of"].min())
    return bool(through + pd.Timedelta(days=horizon_days) > first_test)


def _verdict(objective: str, ours: float, theirs: float, margin: float, champion: str) -> tuple[bool, str]:
    gain = improvement(objective, ours, theirs)
    if gain > 0 and gain >= margin:
        return True, f"beats {champion} on {objective} by {gain:.4f} (margin {margin})"
    return False, f"does not beat {champion} on {objective} by the margin {margin} ({ours:.4f} vs {theirs:.4f})"


def decide_promotion(settings: Settings, evaluation: Evaluation, test: pd.DataFrame,
                     champion_version: str | None) -> tuple[bool, str, float | None]:
    """Return (promote, reason, champion_metric) for a challenger evaluated on ``test``.

    The rule is the module docstring's: held-out challenger, recency first, and a champion never
    judged on rows it was fitted on.
    """
    objective = settings.training.objective
    ours = float(evaluation.metrics[objective])
    if not evaluation.beats_recency:
        rec = evaluation.baselines.get("recency", {}).get(objective, float("nan"))
        return False, f"does not beat the recency baseline on {objective} ({ours:.4f} vs {rec:.4f})", None
    if champion_version is None:
        return True, "no champion yet", None
    try:
        champion, _ = load_bundle(settings, champion_version)
        if fitted_on_test_rows(champion, test, settings.churn.horizon_days):
            theirs = float(champion.metrics["test"][objective])
            who = (f"champion v{champion_version}'s recorded held-out {objective} (it was fitted on "
                   "these test rows, so it is not re-scored on them)")
        else:
            theirs = float(bundle_metrics(champion, test)[objective])
            who = f"champion v{champion_version} (re-scored on the same test rows)"
    except (ValueError, KeyError, TypeError, OSError, MlflowException, XGBoostError) as exc:
        # SchemaMismatchError (a ValueError) when features changed; missing/corrupt artifacts.
        return True, f"champion v{champion_version} cannot score today's features: {exc}"[:4900], None
    promote, reason = _verdict(objective, ours, theirs, settings.training.promotion_margin, who)
    return promote, reason, theirs


def _apply_decision(client: MlflowClient, name: str, version: str, run_id: str, tags: dict[str, str],
                    promote: bool) -> None:
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    for key, value in (tags | {"run_id": run_id}).items():
        client.set_model_version_tag(name, version, key, value)
    _log_batch(client, run_id, tags={f"gate.{k}": v for k, v in tags.items()} | {"model_version": version})


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
    train: pd.DataFrame | None = None,
    registration_key: str | None = None,
    tags: dict[str, str] | None = None,
) -> RegistryResult:
    """Log the training run, register the model as a new version and apply the promotion gate.

    ``evaluation`` is the held-out evaluation on ``test`` (the champion may be re-scored on these
    rows, see the module docstring); ``train``, when given, is recorded as the training dataset.
    ``registration_key`` makes a retry idempotent: called again with the same key after a failure,
    it completes the same run and model version instead of registering a second one. ``tags`` are
    added to the run's tags (the Dask engine says how it trained).
    """
    client = registry_client(settings)
    exp_id = experiment_id(client, settings)
    name, objective = settings.tracking.model_name, settings.training.objective
    metrics = run_metrics(evaluation, tune_result, checks)
    run_tags = {"objective": objective, "beats_recency": str(evaluation.beats_recency).lower(),
                "out_of_time": str(plan.out_of_time if plan else "unknown").lower(),
                "model_family": bundle.family, "fitted_through": bundle.fitted_through} | dict(tags or {})
    run_id = _start_run(client, exp_id, run_name, registration_key)
    try:
        _log_batch(client, run_id, run_params(settings, plan, fingerprint, tune_result), metrics, run_tags)
        _log_datasets(client, run_id, bundle.schema, {"training": train, "test": test})
        with tempfile.TemporaryDirectory(prefix="churnflow-") as tmp:
            reports = write_reports(Path(tmp) / "reports", bundle, evaluation, tune_result=tune_result, plan=plan,
                                    fingerprint=fingerprint, importance=importance, checks=checks)
            client.log_artifacts(run_id, str(reports), artifact_path="reports")
        for path in (dict(evaluation.plots) | dict(plots or {})).values():
            client.log_artifact(run_id, str(path), artifact_path="plots")
        if tune_result is not None:
            _log_trials(client, exp_id, run_id, tune_result)
        version = _model_version(client, exp_id, run_id, name, bundle, test)
        champion_version = _champion_version(client, name)
        promote, reason, champ_metric = decide_promotion(settings, evaluation, test, champion_version)
        decision = "promoted" if promote else "rejected"
        _apply_decision(client, name, version, run_id, promote=promote, tags={
            "decision": decision, "reason": reason, "objective": objective,
            "challenger_metric": f"{evaluation.metrics[objective]:.6f}",
            "champion_metric": "" if champ_metric is None else f"{champ_metric:.6f}",
            "champion_version": champion_version or "", "beats_recency": str(evaluation.beats_recency).lower()})
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    logger.info("registered %s v%s: %s (%s)", name, version, decision, reason)
    return RegistryResult(run_id=run_id, version=version, promoted=promote, decision=decision, reason=reason,
                          objective=objective, challenger_metric=float(evaluation.metrics[objective]),
                          champion_metric=champ_metric, champion_version=champion_version, metrics=metrics)


def register_trained(settings: Settings, trained: TrainedModel, run_name: str | None = None,
                     registration_key: str | None = None) -> RegistryResult:
    """``log_and_register`` for the output of ``training.recipe.train_model``."""
    return log_and_register(settings, trained.bundle, trained.evaluation, trained.test,
                            tune_result=trained.tuning, plan=trained.plan, fingerprint=trained.fingerprint,
                            importance=trained.importance, checks=trained.checks, plots=trained.plots,
                            run_name=run_name, registration_key=registration_key,
                            tags=trained.run_tags)


# ---- loading --------------------------------------------------------------------------------
def _existing_versions(client: MlflowClient, name: str) -> list[str]:
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    return sorted((str(v.version) for v in found), key=int)


def resolve_version(client: MlflowClient, settings: Settings, version: str | None) -> str:
    """The champion's version (``version`` None) or ``version`` itself, checked to exist.

    Raises ``NoChampionError`` / ``ModelVersionNotFoundError`` naming the model, the store, the
    versions that exist and what to do.
    """
    name, store = settings.tracking.model_name, settings.tracking_uri
    if version is None:
        champion = _champion_version(client, name)
        if champion is not None:
            return champion
        existing = _existing_versions(client, name)
        raise NoChampionError(
            f"no champion model registered under '{name}' in {store}"
            + (f" (versions {', '.join(existing)} exist, none promoted)" if existing else "")
            + "; run `churnflow train` first"
            + (", or score with one of them: `churnflow score --model-version N`" if existing else "")
        )
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        existing = _existing_versions(client, name)
        raise ModelVersionNotFoundError(
            f"model '{name}' has no version {version} in {store}; "
            + (f"versions that exist: {', '.join(existing)}. " if existing else "it has no versions yet. ")
            + "Leave out --model-version to use the champion, or run `churnflow train`."
        ) from None
    return str(version)


def load_bundle(settings: Settings, version: str | None = None) -> tuple[ModelBundle, str]:
    """The champion's (or a given version's) ModelBundle and its version number."""
    client = registry_client(settings)
    version = resolve_version(client, settings, version)
    # The version's storage location, not a models:/ URI (resolved with the process-wide URI).
    location = client.get_model_version_download_uri(settings.tracking.model_name, version)
    with tempfile.TemporaryDirectory(prefix="churnflow-bundle-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location.rstrip('/')}/artifacts/bundle", dst_path=tmp,
            tracking_uri=settings.tracking_uri))
        return ModelBundle.load(local), version
