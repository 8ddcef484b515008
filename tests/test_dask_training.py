"""Training on the Dask engine (``training/distributed.py``): a real local cluster of two worker
processes, real Optuna storage, real MLflow store, small data and few trials.

What must hold: the tuning sample is exact, seeded and the same however the rows are
partitioned; trials run on the workers against one resumable study; the final ``xgboost.dask``
fit is reproducible and agrees with a local fit; the model loads with the same pyfunc kernel and
its MLflow run says how it was trained; the local engine does not go near Dask.
Skipped without the extra: ``pip install churnflow[dask]``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

pytest.importorskip("dask.distributed")
pytest.importorskip("xgboost.dask")

import dask
import xgboost as xgb

from churnflow.features.contracts import load_tables
from churnflow.features.partitioned import ComputeError, dask_client
from churnflow.features.settings import ComputeSettings, Settings, load_settings
from churnflow.training import recipe
from churnflow.training.churn_model import load_scorer
from churnflow.training.distributed import (
    JOURNAL,
    SAMPLE_SALT,
    allocate,
    client_for,
    fit_tree_dask,
    selected,
    smallest_keys,
    split_rows,
    strata,
    thresholds,
    tune_on_workers,
    worker_storage,
)
from churnflow.training.recipe import TrainedModel, train_model, train_model_partitioned
from churnflow.training.split import plan_as_of_dates, snapshot_plan
from churnflow.training.tune import FINISHED, base_params, make_dmatrix
from tests.conftest import write_project
from tests.test_training import SCHEMA, make_cv, settings_for

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Two single-thread worker processes (trials in other processes: the storage must cope)."""
    compute = ComputeSettings(engine="dask", n_workers=2, threads_per_worker=1, memory_limit="1GiB",
                              local_directory=str(tmp_path_factory.mktemp("dask")))
    with dask.config.set({"distributed.comm.timeouts.connect": "30s"}), dask_client(compute) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_project(tmp_path_factory.mktemp("dask-train") / "project", n_customers=1200)


ONE_TRIAL = {"n_trials": 1, "max_boost_rounds": 40}
"""One trial: worker 0 draws the local engine's first trial, so both engines tune alike."""


@pytest.fixture(scope="module")
def dask_settings(project: Path) -> Settings:
    return load_settings(project, training=ONE_TRIAL, compute={"engine": "dask", "tuning_sample_rows": 10**6})


@pytest.fixture(scope="module")
def trained(client: object, dask_settings: Settings) -> TrainedModel:
    return train_model(load_tables(dask_settings), dask_settings, client=client)


@pytest.fixture(scope="module")
def trained_locally(project: Path) -> TrainedModel:
    settings = load_settings(project, training=ONE_TRIAL)
    return train_model(load_tables(settings), settings)


# ---- the sample and the test split: exact, seeded, independent of partitions -------------------


def _snapshots(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": np.tile(np.arange(n // 3), 3).astype(str),
        "as_of": np.repeat(pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"]), n // 3),
        "label": (rng.random(n) < 0.2).astype(np.int64),
    })


def _pick(parts: list[pd.DataFrame], n_rows: int, seed: int) -> pd.DataFrame:
    counts = Counter(s for p in parts for s in strata(p))
    quotas = allocate(dict(counts), n_rows)
    limits = thresholds([smallest_keys(p, seed, SAMPLE_SALT, quotas) for p in parts], quotas)
    picked = pd.concat([p[selected(p, seed, SAMPLE_SALT, limits)] for p in parts])
    return picked.sort_values(["as_of", "customer_id"]).reset_index(drop=True)


def test_stratified_sample_is_exact_seeded_and_independent_of_partitions() -> None:
    rows = _snapshots()
    whole = _pick([rows], 500, seed=42)
    split = _pick([rows.iloc[i::7] for i in range(7)], 500, seed=42)

    pd.testing.assert_frame_equal(whole, split)
    assert len(whole) == 500
    expected = allocate(dict(Counter(strata(rows))), 500)
    assert dict(Counter(strata(whole))) == {k: v for k, v in expected.items() if v}
    for stratum, share in Counter(strata(rows)).items():  # each (as-of, label) keeps its share
        assert abs(expected[stratum] - 500 * share / len(rows)) < 1
    assert not whole.equals(_pick([rows], 500, seed=43))
    assert len(_pick([rows], 10**6, seed=42)) == len(rows)  # asking for more takes everything


def test_workers_share_a_journal_beside_a_sqlite_study_and_a_server_database_as_configured(tmp_path: Path) -> None:
    local = Settings(root=tmp_path, training={"storage": "sqlite:///mlruns/optuna.db"})
    assert worker_storage(local) == f"{JOURNAL}{tmp_path / 'mlruns' / 'optuna.journal'}"
    server = Settings(root=tmp_path, training={"storage": "postgresql://db:5432/optuna"})
    assert worker_storage(server) == "postgresql://db:5432/optuna"
    with pytest.raises(ComputeError, match="in-memory SQLite"):
        worker_storage(Settings(root=tmp_path, training={"storage": "sqlite://"}))


def test_test_rows_and_sample_from_partitions_on_the_workers(client, tmp_path: Path) -> None:
    dev, _, test = make_cv(n=400)
    rows = pd.concat([dev, test], ignore_index=True)
    parts = client.scatter([rows.iloc[i::3] for i in range(3)])
    settings = settings_for(tmp_path).model_copy(update={"compute": ComputeSettings(tuning_sample_rows=500)})

    out_of_time = split_rows(client, parts, plan_as_of_dates(pd.Timestamp("2024-12-31"), 90, 30, 2, n_valid=3),
                             settings)
    key = ["as_of", "customer_id"]
    pd.testing.assert_frame_equal(out_of_time.test, test.sort_values(key).reset_index(drop=True), check_like=True)
    assert out_of_time.n_dev == len(dev) and len(out_of_time.sample) == 500
    assert dict(Counter(strata(out_of_time.sample))) == {k: v for k, v in allocate(dict(Counter(strata(dev))), 500)
                                                          .items() if v}

    table = test.assign(customer_id=np.arange(len(test)))  # one snapshot: a stratified test_size share
    snapshot = split_rows(client, client.scatter([table.iloc[i::2] for i in range(2)]),
                          snapshot_plan(table["as_of"].iloc[0]), settings)
    assert len(snapshot.test) == int(np.ceil(0.2 * len(table))) and snapshot.n_dev == len(table) - len(snapshot.test)
    assert abs(snapshot.test["label"].mean() - table["label"].mean()) < 0.01
    assert not set(snapshot.test["customer_id"]) & set(snapshot.sample["customer_id"])


# ---- trials on the workers ---------------------------------------------------------------------


def test_trials_run_on_the_workers_and_the_study_resumes(client, tmp_path: Path) -> None:
    dev, folds, _ = make_cv(n=300)
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    settings = settings_for(tmp_path, n_trials=4, max_boost_rounds=30)

    first = tune_on_workers(client, dev, folds, SCHEMA, settings, "resumable")
    trials = first.study.get_trials(deepcopy=False)
    assert first.n_run_now == 4 and len(trials) == 4
    assert {t.user_attrs["worker"] for t in trials} == workers
    assert os.getpid() not in {t.user_attrs["pid"] for t in trials}
    assert (tmp_path / "mlruns" / "optuna.journal").exists()

    again = tune_on_workers(client, dev, folds, SCHEMA, settings, "resumable")
    assert again.n_run_now == 0 and again.best_params == first.best_params

    # Raising n_trials tops the study up to 6 finished trials. What is guaranteed is relative to the
    # study as this run finds it: Dask runs a task at least once, not exactly once (a task whose
    # worker is presumed lost is run again, and the first run may still finish its trials), so a
    # loaded machine can leave more than 4 trials behind the first run: the messages list them.
    before = again.study.get_trials(deepcopy=False)
    more = tune_on_workers(client, dev, folds, SCHEMA, settings_for(tmp_path, n_trials=6, max_boost_rounds=30),
                           "resumable")
    after = more.study.get_trials(deepcopy=False)
    finished_before = sum(t.state in FINISHED for t in before)
    assert more.n_run_now == len(after) - len(before) == max(0, 6 - finished_before), trial_lines(after)
    assert sum(t.state in FINISHED for t in after) >= 6, trial_lines(after)


def trial_lines(trials: list) -> str:
    """Who ran each trial and when (what a failure of the resume test needs to be explained)."""
    return "\n".join(f"#{t.number} {t.state.name} worker={t.user_attrs.get('worker')} pid={t.user_attrs.get('pid')} "
                     f"start={t.datetime_start} end={t.datetime_complete}" for t in trials)


def _tune_inside_a_task(root: str) -> tuple[int, set[str]]:
    dev, folds, _ = make_cv(n=200)
    settings = settings_for(Path(root), n_trials=2, max_boost_rounds=20)
    with client_for(settings, None) as inside:
        tuned = tune_on_workers(inside, dev, folds, SCHEMA, settings, "inside")
    return tuned.n_run_now, {t.user_attrs["worker"] for t in tuned.study.get_trials(deepcopy=False)}


def test_training_inside_a_dask_task_hands_its_thread_back(client, tmp_path: Path) -> None:
    """A flow's ``DaskTaskRunner`` runs the training task on a worker: its trials must still get
    that worker (one thread each here) instead of waiting for the task that waits for them."""
    n_run, where = client.submit(_tune_inside_a_task, str(tmp_path), pure=False).result(timeout=120)
    assert n_run == 2 and where == set(client.scheduler_info(n_workers=-1)["workers"])


# ---- the final fit with xgboost.dask -----------------------------------------------------------


def test_xgboost_dask_fit_is_reproducible_and_agrees_with_a_local_fit(client, tmp_path: Path) -> None:
    dev, _, test = make_cv(n=600)
    parts = client.scatter([dev.iloc[i::3] for i in range(3)])
    params = base_params(settings_for(tmp_path)) | {"max_depth": 3, "learning_rate": 0.1, "nthread": 1}

    first = fit_tree_dask(client, parts, SCHEMA, params, 40, dev)
    second = fit_tree_dask(client, parts, SCHEMA, params, 40, dev)
    local = xgb.train(params, make_dmatrix(dev, SCHEMA), num_boost_round=40)

    matrix = make_dmatrix(test, SCHEMA)
    np.testing.assert_array_equal(first.predict(matrix), second.predict(matrix))
    y = test["label"].to_numpy()
    assert abs(roc_auc_score(y, first.predict(matrix)) - roc_auc_score(y, local.predict(matrix))) < 0.01
    assert first.feature_names == local.feature_names and first.feature_types == local.feature_types


# ---- end to end: train_model with engine = "dask" ----------------------------------------------


def test_dask_engine_trains_the_local_engines_model_on_the_same_data(client, trained: TrainedModel,
                                                                     trained_locally: TrainedModel,
                                                                     tmp_path: Path) -> None:
    tags = trained.run_tags
    assert tags["engine"] == "dask" and tags["tuning_sample_rows"] == tags["development_rows"]  # sample = all rows
    assert ("linear_fit_rows" in tags) == (trained.bundle.family != "tree")
    assert trained_locally.run_tags == {}
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    assert {t.user_attrs["worker"] for t in trained.tuning.study.get_trials(deepcopy=False)} <= workers

    assert trained.plan == trained_locally.plan and trained.bundle.schema == trained_locally.bundle.schema
    pd.testing.assert_frame_equal(trained.test, trained_locally.test.sort_values(["as_of", "customer_id"])
                                  .reset_index(drop=True), check_like=True)
    assert trained.tuning.best_params == trained_locally.tuning.best_params
    assert trained.choice.family == trained_locally.choice.family
    ours, theirs = trained.evaluation.metrics["roc_auc"], trained_locally.evaluation.metrics["roc_auc"]
    assert abs(ours - theirs) < 0.002, (ours, theirs)
    assert trained.bundle.fitted_through == trained_locally.bundle.fitted_through
    assert trained.bundle.reference.keys() == trained_locally.bundle.reference.keys()
    assert trained.bundle.segments == trained_locally.bundle.segments

    folder = trained.bundle.save(tmp_path / "bundle")
    np.testing.assert_allclose(load_scorer(folder).probability(trained.test), trained.bundle.predict_proba(trained.test),
                               atol=1e-12)


def test_training_straight_from_the_sources_matches_training_from_tables(client, dask_settings: Settings,
                                                                         trained: TrainedModel,
                                                                         trained_locally: TrainedModel) -> None:
    """The sources read, partitioned and validated on the workers: same plan, rows and model."""
    from_sources = train_model_partitioned(dask_settings, client=client)

    assert from_sources.plan == trained.plan and from_sources.bundle.schema == trained.bundle.schema
    pd.testing.assert_frame_equal(from_sources.test, trained.test, check_like=True)
    assert from_sources.tuning.best_params == trained.tuning.best_params
    assert abs(from_sources.evaluation.metrics["roc_auc"] - trained_locally.evaluation.metrics["roc_auc"]) < 0.002
    assert {k: v for k, v in from_sources.fingerprint.items() if not k.endswith("sha256")} == \
        {k: v for k, v in trained.fingerprint.items() if not k.endswith("sha256")}


def test_the_mlflow_run_says_how_the_dask_engine_trained(trained: TrainedModel, dask_settings: Settings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from churnflow.training.registry import register_trained, registry_client

    result = register_trained(dask_settings, trained)
    run = registry_client(dask_settings).get_run(result.run_id)
    assert run.data.tags["engine"] == "dask" and run.data.tags["tuning_sample_rows"] == trained.run_tags["tuning_sample_rows"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dask_settings.tracking_uri)  # no process-wide URI left behind
    model = mlflow.pyfunc.load_model(f"models:/{dask_settings.tracking.model_name}/{result.version}")
    out = model.predict(trained.test)
    np.testing.assert_allclose(out["churn_probability"].to_numpy(), trained.bundle.predict_proba(trained.test),
                               atol=1e-12)


def test_only_the_dask_engine_takes_the_dask_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Taken(Exception):
        pass

    def dask_path(*args: object) -> None:
        raise Taken("dask")

    def local_path(*args: object) -> None:
        raise Taken("local")

    monkeypatch.setattr(recipe, "_train_on_dask", dask_path)
    monkeypatch.setattr(recipe, "plan_for", local_path)
    for engine in ("local", "dask"):
        with pytest.raises(Taken, match=engine):
            train_model(None, Settings(root=tmp_path, compute={"engine": engine}))  # type: ignore[arg-type]
