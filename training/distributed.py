"""The training recipe on the Dask engine (``[compute] engine = "dask"``): the same model, at scale.

``training/recipe.py`` runs its steps with these pieces when the engine is ``dask``
(``train_model`` on validated tables in memory, ``train_model_partitioned`` straight from the
sources); everything is decided by the local recipe's own functions (plan, schema, folds,
candidates, calibration, evaluation, the baseline swap, the bundle). Only where rows live and who
computes change:

- **Input** (:class:`Partitioned`): tables in memory are split by the stable customer hash of
  ``features/partitioned.py`` and sent to the workers (:func:`from_tables`); or the sources are
  read, partitioned and validated on the workers (:func:`from_sources`), and the schema, the data
  span and the fingerprint are decided from per-partition summaries.
- **Snapshots per partition.** Each partition's training snapshots are built on a worker by
  ``partition_snapshots`` (the local ``build_snapshots``), with BG/NBD fitted once on all
  partitions' histories (``global_btyd``). The rows stay on the workers.
- **Test rows** are gathered to the client: evaluation, explanation and the promotion gate need
  them in memory. Out of time they are the test as-of date's rows (one row per active customer);
  for a snapshot table an exact stratified ``training.test_size`` share chosen by a seeded hash
  (not the local engine's scikit-learn split: other rows, same share). This is fine up to a few
  million customers; beyond, evaluate on a sample (not built).
- **Tuning sample.** Optuna tunes on an exact, seeded sample of ``compute.tuning_sample_rows``
  development rows, stratified by as-of date and label (so each rolling-origin fold keeps its
  churn rate), gathered and sent to every worker. Rows are chosen by the smallest seeded hash of
  (customer, as-of date) per stratum: the sample does not depend on how the rows are partitioned.
- **Trials in parallel on the workers**, each worker running ``study.optimize(n_trials=k)``
  against one shared persistent study with plain single-threaded XGBoost on the sample (never
  distributed XGBoost inside concurrent trials). Storage: a server database URL in
  ``training.storage`` (PostgreSQL, MySQL) is used as it is; a SQLite URL becomes an Optuna
  journal file beside the database (``optuna.journal`` next to ``optuna.db``): Optuna's
  documentation advises against SQLite for parallel optimisation (one writer at a time for the
  whole file), while ``JournalFileBackend`` appends under a file lock and is its documented
  storage for several processes on one machine or on a shared (NFS) folder. Worker 0 samples
  with the local engine's seed (a one-trial study tunes as the local engine does); a remote
  cluster needs the journal's folder shared, or a server database.
  The study's name adds the engine and the sample size to the local key: trials scored on a
  sample are not comparable with trials scored on all development rows. A rerun resumes it.
- **Candidates, calibration and baselines** (tree, linear, blends; the baselines the evaluation
  compares with) are fitted on the sample, on the client.
- **Final fits.** The tree part is fitted by ``xgboost.dask.train`` on every development row (the
  evaluated model) and then on every snapshot row (the registered model); the linear part of a
  linear or blended candidate is fitted on the sample (plus the test rows for the registered
  model), which the run's tags say (``linear_fit_rows``). The booster goes into the same
  ``ModelBundle``, so the logged MLflow pyfunc is the local engine's (``training/churn_model.py``).
- **Population** (segments, drift reference): snapshots at the model's as-of date per partition,
  gathered to the client.

Determinism: the sample, the test rows, the folds and the final ``xgboost.dask`` fit (fixed
partitions, each placed on a fixed worker) are reproducible; parallel trials are not (which
worker asks the sampler first depends on timing), so the tuned parameters can differ between
runs, as with any parallel search.

*The client*: the one passed in; inside a Dask task (a flow's ``DaskTaskRunner``) a
``worker_client``, which hands the task's thread back to the trials; else a cluster started
from ``[compute]`` and closed at the end (:func:`client_for`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd
import xgboost as xgb
from optuna.trial import TrialState

from churnflow.features.build import infer_schema, snapshot_as_of
from churnflow.features.contracts import Tables
from churnflow.features.io import sqlite_path
from churnflow.features.partitioned import (
    ComputeError,
    GlobalFacts,
    Validated,
    customer_partition,
    dask_client,
    global_btyd,
    global_facts,
    partition_snapshots,
    read_partitioned,
    sorted_by_customer,
    validate_partitions,
)
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.bundle import ModelBundle
from churnflow.training.calibration import Calibrator
from churnflow.training.candidates import Choice
from churnflow.training.churn_model import model_frame
from churnflow.training.errors import TrainingDataError, TuningBudgetError
from churnflow.training.fit import final_rounds
from churnflow.training.linear import fit_linear
from churnflow.training.split import SplitPlan, check_labels
from churnflow.training.tune import (
    Folds,
    TuneResult,
    base_params,
    cv_objective,
    direction,
    label_array,
    open_study,
    short_hash,
    trial_logger,
    trials_frame,
)

if TYPE_CHECKING:
    from distributed import Client, Future

logger = logging.getLogger(__name__)
JOURNAL = "journal:"
"""Prefix of a journal-file storage spec (what the workers open, see :func:`worker_storage`)."""
TEST_SALT, SAMPLE_SALT = 1, 2
WAIT_MARGIN_S = 300.0
"""How long past ``training.timeout_seconds`` the client waits for the workers' trials."""


# ---- exact, seeded, stratified selection (partition-independent) -----------------------------


def row_keys(frame: pd.DataFrame, seed: int, salt: int) -> np.ndarray:
    """A seeded 64-bit hash of each row's (customer, as-of date): the same in every partition."""
    ids = frame["customer_id"].astype("string[pyarrow]").astype(object)
    as_of = pd.to_datetime(frame["as_of"]).dt.strftime("%Y-%m-%d") if "as_of" in frame else ""
    keyed = pd.DataFrame({"id": ids.to_numpy(), "as_of": np.asarray(as_of, dtype=object)})
    hash_key = f"cf{salt:02d}{seed % 10**12:012d}"
    return pd.util.hash_pandas_object(keyed, index=False, hash_key=hash_key).to_numpy()


def strata(frame: pd.DataFrame) -> np.ndarray:
    """``"<as-of date>|<label>"`` of each row: what the test split and the sample stratify by."""
    as_of = pd.to_datetime(frame["as_of"]).dt.strftime("%Y-%m-%d") if "as_of" in frame else ""
    return (pd.Series(as_of, index=frame.index, dtype=object).astype(str) + "|"
            + frame["label"].astype("int64").astype(str)).to_numpy(dtype=object)


def stratum_counts(frame: pd.DataFrame | None) -> Counter[str]:
    return Counter() if frame is None or not len(frame) else Counter(dict(Counter(strata(frame))))


def allocate(counts: dict[str, int], n_rows: int) -> dict[str, int]:
    """``n_rows`` shared among the strata in proportion to their sizes, summing to ``n_rows``
    exactly (largest remainder; ties broken by stratum name)."""
    total = sum(counts.values())
    n_rows = min(n_rows, total)
    exact = {s: n_rows * c / total for s, c in counts.items()}
    quota = {s: math.floor(v) for s, v in exact.items()}
    for s in sorted(exact, key=lambda s: (quota[s] - exact[s], s))[: n_rows - sum(quota.values())]:
        quota[s] += 1
    return quota


def smallest_keys(frame: pd.DataFrame | None, seed: int, salt: int, quotas: dict[str, int]) -> dict[str, np.ndarray]:
    """Per stratum, the ``quota`` smallest row keys of one partition (the candidates for the global pick)."""
    if frame is None or not len(frame):
        return {}
    keys, labels = row_keys(frame, seed, salt), strata(frame)
    out = {}
    for stratum in np.unique(labels):
        k = quotas.get(stratum, 0)
        if k > 0:
            mine = keys[labels == stratum]
            out[stratum] = np.sort(mine)[:k]
    return out


def thresholds(per_partition: Sequence[dict[str, np.ndarray]], quotas: dict[str, int]) -> dict[str, int]:
    """The largest key each stratum selects: its ``quota``-th smallest key over all partitions."""
    out = {}
    for stratum, k in quotas.items():
        keys = [p[stratum] for p in per_partition if stratum in p]
        if k > 0 and keys:
            out[stratum] = int(np.sort(np.concatenate(keys))[k - 1])
    return out


def selected(frame: pd.DataFrame, seed: int, salt: int, limits: dict[str, int]) -> np.ndarray:
    """Boolean mask of the rows whose key is within their stratum's threshold."""
    mask = np.zeros(len(frame), dtype=bool)
    if not len(frame):
        return mask
    keys, labels = row_keys(frame, seed, salt), strata(frame)
    for stratum, limit in limits.items():
        mask |= (labels == stratum) & (keys <= np.uint64(limit))
    return mask


def select_stratified(client: Client, parts: Sequence[Future], quotas: dict[str, int], seed: int, salt: int
                      ) -> dict[str, int]:
    """Thresholds of an exact stratified pick of ``quotas`` rows from the partitions (two passes:
    each partition's smallest keys come back, then the thresholds go out)."""
    candidates = client.gather(client.map(smallest_keys, parts, seed=seed, salt=salt, quotas=quotas, pure=False))
    return thresholds(candidates, quotas)


def take(frame: pd.DataFrame | None, seed: int, salt: int, limits: dict[str, int], keep: bool = True
         ) -> pd.DataFrame | None:
    """The selected rows of a partition (``keep=False``: the others)."""
    if frame is None:
        return None
    mask = selected(frame, seed, salt, limits)
    return frame[mask if keep else ~mask].reset_index(drop=True)


# ---- snapshots per partition ---------------------------------------------------------------------


def split_tables(tables: Tables, n_partitions: int) -> list[Tables]:
    """The validated tables in customer partitions (every row of a customer in the same one)."""
    def part_of(frame: pd.DataFrame | None) -> np.ndarray | None:
        return None if frame is None else customer_partition(frame["customer_id"], n_partitions)

    numbers = {name: part_of(getattr(tables, name)) for name in ("customers", "events", "contacts")}
    parts = []
    for i in range(n_partitions):
        frames = {name: None if nums is None else getattr(tables, name)[nums == i] for name, nums in numbers.items()}
        parts.append(dataclasses.replace(tables, **frames))
    return parts


def n_partitions_for(tables: Tables, client: Client, settings: Settings) -> int:
    """``compute.n_partitions``, else two per worker thread (at least one)."""
    threads = sum(client.nthreads().values()) or 1
    return settings.compute.n_partitions or max(1, min(2 * threads, len(tables.customers)))


@dataclass
class Partitioned:
    """Validated customer partitions on the workers and what was decided once for all of them."""

    validated: list[Future]
    """``Validated`` per partition (futures)."""
    facts: GlobalFacts
    data_start: pd.Timestamp | None
    """The first event (None without events): with ``facts.end_date``, what the plan needs."""
    fingerprint: dict[str, Any]

    def plan_tables(self) -> Tables:
        """A row-less ``Tables`` carrying what ``plan_for`` and ``snapshot_as_of`` read (the data
        start and end), so the plan is decided by the local engine's functions."""
        events = None if self.data_start is None else pd.DataFrame({"event_time": [self.data_start]})
        return Tables(customers=pd.DataFrame(), events=events, contacts=None, end_date=self.facts.end_date)


def from_tables(client: Client, tables: Tables, settings: Settings) -> Partitioned:
    """Validated tables in memory, split by customer and sent to the workers."""
    parts = [p for p in split_tables(tables, n_partitions_for(tables, client, settings)) if len(p.customers)]
    facts = GlobalFacts(infer_schema(tables, settings), tables.end_date, len(tables.customers),
                        dict(tables.dropped_rows))
    start = tables.events["event_time"].min() if tables.events is not None and len(tables.events) else None
    return Partitioned(client.scatter([Validated(p) for p in parts], hash=False), facts, start, tables.fingerprint())


def from_sources(client: Client, settings: Settings) -> Partitioned:
    """The configured sources read, partitioned and validated on the workers
    (``features/partitioned.py``): the client never holds the tables."""
    validated, summaries = validate_partitions(read_partitioned(settings), settings)
    facts = global_facts(summaries, settings)
    futures = client.compute(validated)
    spans = client.gather(client.map(_span, futures, pure=False))
    starts = [first for first, _ in spans if first is not None]
    return Partitioned(futures, facts, min(starts) if starts else None,
                       combined_fingerprint([f for _, f in spans], facts.end_date))


def _span(part: Validated) -> tuple[pd.Timestamp | None, dict[str, Any]]:
    """One partition's first event and fingerprint."""
    if part.tables is None:
        return None, {}
    events = part.tables.events
    first = events["event_time"].min() if events is not None and len(events) else None
    return first, part.tables.fingerprint()


def combined_fingerprint(parts: Sequence[dict[str, Any]], end_date: pd.Timestamp) -> dict[str, Any]:
    """The partitions' fingerprints as one: rows added, date ranges merged, the content hashes
    hashed in partition order (so it also changes with ``compute.n_partitions``)."""
    out: dict[str, Any] = {"end_date": end_date.date().isoformat()}
    for key in sorted({k for p in parts for k in p if k != "end_date"}):
        values = [p[key] for p in parts if p.get(key) not in (None, "")]
        if key.endswith("_rows"):
            out[key] = sum(values)
        elif key.endswith("_from"):
            out[key] = min(values, default="")
        elif key.endswith("_to"):
            out[key] = max(values, default="")
        else:
            out[key] = short_hash(values)
    return out


def snapshot_partitions(client: Client, data: Partitioned, plan: SplitPlan, settings: Settings
                        ) -> tuple[list[Future], GlobalFacts]:
    """Each partition's training snapshots (futures on the workers), and the facts (the schema
    with its BG/NBD fits) they were built with."""
    facts, btyd_params = global_btyd(data.validated, plan.all_dates, settings, data.facts)
    snaps = client.map(partition_snapshots, data.validated, as_of_dates=plan.all_dates, settings=settings,
                       facts=facts, with_labels=True, btyd_params=btyd_params, pure=False)
    return snaps, facts


# ---- test rows and the tuning sample ------------------------------------------------------------


@dataclass
class Rows:
    """Where the training rows are: development rows on the workers, test rows and sample here."""

    dev: list[Future]
    everything: list[Future]
    test: pd.DataFrame
    sample: pd.DataFrame
    n_dev: int


def _dev_and_test(frame: pd.DataFrame | None, plan: SplitPlan, seed: int, limits: dict[str, int]
                  ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    if frame is None:
        return None, None
    if plan.out_of_time:
        as_of = pd.to_datetime(frame["as_of"])
        return frame[as_of < plan.test].reset_index(drop=True), frame[as_of == plan.test].reset_index(drop=True)
    return take(frame, seed, TEST_SALT, limits, keep=False), take(frame, seed, TEST_SALT, limits)


def _check_dates(counts: Counter[str], plan: SplitPlan) -> None:
    """As ``training_snapshots`` says it: every planned as-of date needs active customers."""
    present = {s.split("|")[0] for s, c in counts.items() if c}
    for date in plan.all_dates:
        if date.date().isoformat() not in present:
            raise TrainingDataError(
                f"no customer is active at the as-of date {date.date()} (planned dates: "
                f"{[d.date().isoformat() for d in plan.all_dates]}). Check data.events and the dates in "
                "it, or lower training.n_train_snapshots so the plan starts later.")


def split_rows(client: Client, snaps: list[Future], plan: SplitPlan, settings: Settings) -> Rows:
    """Development rows (kept on the workers), test rows and the tuning sample (gathered)."""
    seed = settings.training.seed
    counts: Counter[str] = sum(client.gather(client.map(stratum_counts, snaps, pure=False)), Counter())
    limits: dict[str, int] = {}
    if plan.out_of_time:
        _check_dates(counts, plan)
    else:
        limits = select_stratified(client, snaps, allocate(counts, math.ceil(settings.training.test_size
                                                                             * counts.total())), seed, TEST_SALT)
    pairs = client.map(_dev_and_test, snaps, plan=plan, seed=seed, limits=limits, pure=False)
    dev = client.map(itemgetter(0), pairs, pure=False)
    test = sorted_by_customer(client.gather(client.map(itemgetter(1), pairs, pure=False)))
    check_labels(test, f"the test rows ({plan.to_dict()['test']})")
    dev_counts: Counter[str] = sum(client.gather(client.map(stratum_counts, dev, pure=False)), Counter())
    quotas = allocate(dev_counts, settings.compute.tuning_sample_rows)
    sample_limits = select_stratified(client, dev, quotas, seed, SAMPLE_SALT)
    sample = sorted_by_customer(client.gather(client.map(take, dev, seed=seed, salt=SAMPLE_SALT,
                                                         limits=sample_limits, pure=False)))
    logger.info("dask engine: %d development rows on the workers, %d test rows; tuning sample %d rows",
                dev_counts.total(), len(test), len(sample))
    return Rows(dev=dev, everything=snaps, test=test, sample=sample, n_dev=dev_counts.total())


# ---- Optuna trials on the workers ---------------------------------------------------------------


def worker_storage(settings: Settings) -> str:
    """The study storage as every worker opens it: a server database URL as configured; for a
    SQLite URL, a journal file beside the database (see the module doc for why)."""
    url = settings.optuna_storage
    path = sqlite_path(url)
    if path is None and url.startswith("sqlite"):
        raise ComputeError(f"training.storage = {settings.training.storage!r} is an in-memory SQLite database, "
                           "which the Dask workers cannot share; use a file (sqlite:///mlruns/optuna.db) or a "
                           "server database (postgresql://...)")
    return url if path is None else f"{JOURNAL}{path.with_suffix('.journal')}"


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    if spec.startswith(JOURNAL):
        path = Path(spec.removeprefix(JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = optuna.storages.journal
        return journal.JournalStorage(journal.JournalFileBackend(str(path), journal.JournalFileOpenLock(str(path))))
    return optuna.storages.RDBStorage(spec)


def _pruner(settings: Settings) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=3) if settings.training.pruning else optuna.pruners.NopPruner()


def run_trials(sample: pd.DataFrame, folds: Folds, schema: FeatureSchema, settings: Settings, study_name: str,
               storage: str, n_trials: int, sampler_seed: int) -> tuple[int | None, list[np.ndarray] | None]:
    """On one worker: ``n_trials`` trials of the shared study, single-threaded XGBoost on the sample.

    Each trial records the worker and process that ran it. Returns this worker's best completed
    trial number and its out-of-fold margins (the candidate comparison reuses them).
    """
    from distributed import get_worker

    worker = get_worker()
    where = worker.address
    settings = with_threads(settings, worker.state.nthreads)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, constant_liar=True)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage), sampler=sampler,
                              pruner=_pruner(settings))
    oof: dict[int, list[np.ndarray]] = {}
    objective = cv_objective(sample, folds, schema, settings, oof)

    def on_worker(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", where)
        trial.set_user_attr("pid", os.getpid())
        return objective(trial)

    study.optimize(on_worker, n_trials=n_trials, timeout=settings.training.timeout_seconds,
                   callbacks=[trial_logger(settings.training.n_trials)])
    mine = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number in oof]
    if not mine:
        return None, None
    sign = 1.0 if direction(settings.training.objective) == "maximize" else -1.0
    best = max(mine, key=lambda t: sign * float(t.value))
    return best.number, oof[best.number]


def with_threads(settings: Settings, n_threads: int) -> Settings:
    """Settings for one trial inside a worker: XGBoost with that worker's threads (one by default),
    one trial per worker at a time."""
    training = settings.training.model_copy(update={"n_threads": n_threads})
    return settings.model_copy(update={"training": training})


def tune_on_workers(client: Client, sample: pd.DataFrame, folds: Folds, schema: FeatureSchema, settings: Settings,
                    study_name: str) -> TuneResult:
    """Run (or resume) the study with the remaining trials split over the workers (see the module doc)."""
    cfg, spec = settings.training, worker_storage(settings)
    study, n_before, finished = open_study(settings, study_name, open_storage(spec))  # as the local engine
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    remaining = max(0, cfg.n_trials - finished)
    shares = [remaining // len(workers) + (i < remaining % len(workers)) for i in range(len(workers))]
    logger.info("study %s (%s): %d finished, running %d more on %d workers", study_name, spec, finished, remaining,
                len(workers))
    # A fresh key (hash=False): the same sample scattered again while the last run's copy is still
    # being released made the worker fail to acquire the key, and the scatter waited forever.
    [sample_on_workers] = client.scatter([sample], broadcast=True, hash=False)
    futures = [client.submit(run_trials, sample_on_workers, folds, schema, settings, study_name, spec, k,
                             cfg.seed + n_before + 1000 * i, workers=[w], allow_other_workers=True, pure=False)
               for i, (w, k) in enumerate(zip(workers, shares, strict=True)) if k > 0]
    results = _gather_within(client, futures, cfg.timeout_seconds + WAIT_MARGIN_S)
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise TuningBudgetError(f"study {study_name} has no completed trial; raise training.timeout_seconds or "
                                "training.n_trials, or turn off training.pruning")
    best = study.best_trial
    return TuneResult(study=study, best_params=base_params(settings) | best.params,
                      best_iteration=int(best.user_attrs["best_iteration"]), best_value=float(best.value),
                      trials=trials_frame(study), n_run_now=len(study.get_trials(deepcopy=False)) - n_before,
                      best_oof=dict(results).get(best.number))


def _gather_within(client: Client, futures: list[Future], timeout_s: float) -> list[Any]:
    from distributed import wait

    try:
        wait(futures, timeout=timeout_s)
    except TimeoutError as exc:
        client.cancel(futures)
        raise ComputeError(f"the tuning trials on the Dask workers did not finish within {timeout_s:.0f} s; "
                           "check the workers (dashboard, logs) and rerun: the study resumes") from exc
    return client.gather(futures)


# ---- final fits with xgboost.dask -----------------------------------------------------------------


def _n_rows(frame: pd.DataFrame | None) -> int:
    return 0 if frame is None else len(frame)


def _model_part(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    return model_frame(frame, schema.features, schema.categorical_levels)


def _label_part(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(label_array(frame), index=frame.index, name="label")


def fit_tree_dask(client: Client, parts: Sequence[Future], schema: FeatureSchema, params: dict[str, Any],
                  n_rounds: int, meta: pd.DataFrame) -> xgb.Booster:
    """One booster on every row of ``parts`` with ``xgboost.dask`` (each worker with its threads).

    The model rows of partition *i* are placed on worker *i* mod *n* (in address order): XGBoost's
    distributed result depends on which rows each worker holds, so a fixed placement makes the
    fit reproducible (placement left to the scheduler gave boosters differing by up to 0.06 in
    probability between two fits of the same rows). ``meta``: any frame with the snapshot
    columns (its first zero rows give the model frame's types).
    """
    import dask.dataframe as dd
    import xgboost.dask as dxgb

    lengths = client.gather(client.map(_n_rows, parts, pure=False))
    parts = [p for p, n in zip(parts, lengths, strict=True) if n]
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])

    def placed(function: Callable[..., Any], *args: Any) -> list[Future]:
        return [client.submit(function, part, *args, workers=[workers[i % len(workers)]], allow_other_workers=True,
                              pure=False) for i, part in enumerate(parts)]

    x = dd.from_delayed(placed(_model_part, schema), meta=model_frame(meta.iloc[:0], schema.features, schema.categorical_levels), verify_meta=False)
    y = dd.from_delayed(placed(_label_part), meta=_label_part(meta.iloc[:0]), verify_meta=False)
    matrix = dxgb.DaskDMatrix(client, x, y, enable_categorical=True)
    output = dxgb.train(client, params, matrix, num_boost_round=int(n_rounds))
    return output["booster"]


def dask_fitter(client: Client, parts: Sequence[Future]
                ) -> Callable[[pd.DataFrame, FeatureSchema, Choice, Calibrator], ModelBundle]:
    """A ``fit_bundle`` whose tree part is fitted on every row of ``parts`` by ``xgboost.dask``, and
    whose linear part (linear or blended candidates) on the in-memory ``rows`` it is given."""

    def fit(rows: pd.DataFrame, schema: FeatureSchema, choice: Choice, calibrator: Calibrator,
            **fields: Any) -> ModelBundle:
        booster, linear = None, None
        # Rounds grown for all the rows the trees see, as the local fit does (``final_rounds``).
        rounds = final_rounds(choice, sum(client.gather([client.submit(len, p, pure=False) for p in parts])))
        if choice.tree_weight > 0:
            params = {k: v for k, v in choice.tree_params.items() if k != "nthread"}  # each worker's own
            booster = fit_tree_dask(client, parts, schema, params, rounds, rows)
        if choice.tree_weight < 1:
            frame = model_frame(rows, schema.features, schema.categorical_levels)
            linear = fit_linear(frame, label_array(rows), schema.features, schema.categorical_levels, choice.linear_c)
        return ModelBundle(booster=booster, calibrator=calibrator, schema=schema, best_iteration=rounds - 1,
                           linear=linear, tree_weight=choice.tree_weight, **fields)

    return fit


# ---- the recipe ---------------------------------------------------------------------------------


@contextmanager
def client_for(settings: Settings, client: Client | None) -> Iterator[Client]:
    """The client to train with: the one given; inside a Dask task (a flow's ``DaskTaskRunner``),
    a ``worker_client`` (the task's thread is handed back, so the trials and ``xgboost.dask`` can
    use that worker too); else one of the configured cluster, closed after."""
    from distributed import get_worker, worker_client

    if client is not None:
        yield client
        return
    try:
        get_worker()
    except ValueError:  # not in a task: this process is the client
        with dask_client(settings.compute, settings) as own:
            yield own
        return
    with worker_client() as inside:
        yield inside


def population_on_workers(client: Client, data: Partitioned, settings: Settings, facts: GlobalFacts) -> pd.DataFrame:
    """Features of the customers active at the model's as-of date (as ``recipe.scoring_population``)."""
    parts = client.map(partition_snapshots, data.validated, as_of_dates=[snapshot_as_of(data.plan_tables())],
                       settings=settings, facts=facts, with_labels=False, pure=False)
    return sorted_by_customer(client.gather(parts))


def run_tags(rows: Rows, choice: Choice) -> dict[str, str]:
    """What the MLflow run says about how the Dask engine trained the model."""
    tags = {"engine": "dask", "tuning_sample_rows": str(len(rows.sample)), "development_rows": str(rows.n_dev),
            "tree_fit_rows": "all rows (xgboost.dask)" if choice.tree_weight > 0 else "none"}
    if choice.tree_weight < 1:
        tags["linear_fit_rows"] = "tuning sample + test rows"
    return tags
