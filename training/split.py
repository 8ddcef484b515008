"""Which as-of dates train, validate and test a churn model, and how snapshot rows are split.

Churn models are judged out of time: the model is tuned and calibrated on earlier snapshots and
tested on the latest one whose label window is complete. A training snapshot whose label window
overlaps the validation or test period would let the model peek at the outcome it is judged on,
so the dates are planned here once, with the rule written down and tested, instead of being
chosen by hand in a flow.

Convention (docs/DESIGN.md): labels of an as-of date ``T`` use ``T <= time < T + H days``, so a
label window "ends" at ``T + H`` (exclusive).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

from churnflow.features.build import build_snapshots, snapshot_as_of
from churnflow.features.contracts import Tables
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.errors import TrainingDataError

N_VALID_DATES = 3
"""Rolling-origin validation dates of event data: the model is chosen on the mean of three."""
CV_FOLDS = 5
CV_REPEATS = 2
"""Snapshot tables: the model is chosen on the mean of 5-fold stratified CV, repeated twice."""
MIN_PER_CLASS_AND_FOLD = 2


@dataclass(frozen=True)
class SplitPlan:
    """As-of dates of the training, validation and test snapshots.

    ``valid_dates`` are the rolling-origin validation dates (oldest first; ``valid`` is the
    latest); fold ``j`` validates on ``valid_dates[j]`` and trains on the ``n_train_per_fold``
    dates of ``train`` whose label windows end on or before it. ``out_of_time`` is False for
    snapshot tables (one period, stratified split): the evaluation then overstates what the model
    will do next month, and reports say so.
    """

    train: list[pd.Timestamp] = field(default_factory=list)
    valid: pd.Timestamp | None = None
    test: pd.Timestamp | None = None
    out_of_time: bool = True
    valid_dates: list[pd.Timestamp] = field(default_factory=list)
    n_train_per_fold: int = 0
    horizon_days: int = 0

    @property
    def all_dates(self) -> list[pd.Timestamp]:
        return sorted({*self.train, *self.valid_dates, *(d for d in (self.valid, self.test) if d is not None)})

    @property
    def folds(self) -> list[tuple[list[pd.Timestamp], pd.Timestamp]]:
        """(training dates, validation date) of each rolling origin, oldest first."""
        if not self.out_of_time or self.valid is None:
            return []
        valid_dates = self.valid_dates or [self.valid]
        n_train = self.n_train_per_fold or len(self.train)
        horizon = pd.Timedelta(days=self.horizon_days)
        out = []
        for v in valid_dates:
            before = [t for t in self.train if t + horizon <= v] if self.horizon_days else list(self.train)
            out.append((before[-n_train:], v))
        return out

    def to_dict(self) -> dict[str, object]:
        """Plain strings for logging (MLflow params, JSON)."""
        return {
            "train": [d.date().isoformat() for d in self.train],
            "valid": self.valid.date().isoformat() if self.valid is not None else None,
            "valid_dates": [d.date().isoformat() for d in self.valid_dates],
            "test": self.test.date().isoformat() if self.test is not None else None,
            "out_of_time": self.out_of_time,
        }


def plan_as_of_dates(
    data_end: pd.Timestamp,
    horizon_days: int,
    step_days: int,
    n_train: int,
    *,
    n_valid: int = 1,
    data_start: pd.Timestamp | None = None,
    min_history_days: int = 0,
) -> SplitPlan:
    """Plan out-of-time as-of dates ending at the last complete label window.

    - ``T_test``: the latest midnight with ``T_test + H <= data_end + 1 day`` (the last day of the
      data counts fully, so its label window is complete).
    - ``V_j = T_test - H - j * step`` for ``j = 0 .. n_valid - 1``: the rolling-origin validation
      dates; the latest, ``T_valid = V_0``, has its label window end exactly where the test one
      starts.
    - Fold ``j`` trains on ``V_j - H - k * step`` for ``k = 0 .. n_train - 1``: every training
      label window of a fold ends on or before its validation date. ``train`` is the union over
      the folds: ``T_valid - H - k * step`` for ``k = 0 .. n_train + n_valid - 2``.

    When ``data_start`` is given, the earliest training date must leave ``min_history_days`` of
    history before it; otherwise a ValueError says how many days of data the plan needs.
    """
    if horizon_days <= 0 or step_days <= 0 or n_train < 1 or n_valid < 1:
        raise ValueError(
            f"horizon_days ({horizon_days}) and step_days ({step_days}) must be positive and "
            f"n_train ({n_train}) and n_valid ({n_valid}) at least 1"
        )
    end = pd.Timestamp(data_end)
    horizon = pd.Timedelta(days=horizon_days)
    step = pd.Timedelta(days=step_days)
    t_test = (end + pd.Timedelta(days=1) - horizon).normalize()
    t_valid = t_test - horizon
    valid_dates = sorted(t_valid - j * step for j in range(n_valid))
    train = sorted(t_valid - horizon - k * step for k in range(n_train + n_valid - 1))
    if data_start is not None:
        _check_history(train[0], pd.Timestamp(data_start), end, horizon_days, step_days, n_train + n_valid - 1,
                       min_history_days)
    return SplitPlan(train=train, valid=t_valid, test=t_test, out_of_time=True, valid_dates=valid_dates,
                     n_train_per_fold=n_train, horizon_days=horizon_days)


def _check_history(first: pd.Timestamp, data_start: pd.Timestamp, end: pd.Timestamp, horizon_days: int,
                   step_days: int, n_dates: int, min_history_days: int) -> None:
    start = data_start.normalize()
    if first >= start + pd.Timedelta(days=min_history_days) and first > start:
        return
    needed = 3 * horizon_days + (n_dates - 1) * step_days + min_history_days
    have = (end.normalize() - start).days + 1
    raise TrainingDataError(
        f"the data cover {have} days ({start.date()} to {end.date()}) but the plan needs "
        f"at least {needed + 1} days: 3 x horizon_days ({horizon_days}, for the training "
        f"label window, validation and test) + (as-of dates - 1) x step_days "
        f"({n_dates - 1} x {step_days}) + {min_history_days} days of feature history. "
        "Lower churn.horizon_days, training.n_train_snapshots or training.step_days, "
        "or provide more history."
    )


def split_snapshots(
    snapshots: pd.DataFrame, plan: SplitPlan
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Rows of the planned training, validation and test as-of dates (by the ``as_of`` column).

    Raises when a planned date has no rows: an empty validation or test snapshot would make every
    downstream metric meaningless rather than fail loudly.
    """
    if "as_of" not in snapshots.columns:
        raise ValueError("snapshots need an 'as_of' column (see features.build.build_snapshots)")
    as_of = pd.to_datetime(snapshots["as_of"])
    train = snapshots[as_of.isin(plan.train)]
    valid = snapshots[as_of == plan.valid]
    test = snapshots[as_of == plan.test]
    for name, part in (("training", train), ("validation", valid), ("test", test)):
        if part.empty:
            raise ValueError(
                f"no {name} rows in the snapshots for the planned as-of dates {plan.to_dict()}; "
                "build the snapshots for plan.all_dates"
            )
    return train, valid, test


def snapshot_plan(as_of: pd.Timestamp) -> SplitPlan:
    """The plan of a snapshot table: one period, so the evaluation is not out-of-time."""
    t = pd.Timestamp(as_of).normalize()
    return SplitPlan(train=[t], valid=t, test=t, out_of_time=False)


def holdout_split(snapshot: pd.DataFrame, test_size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified (development, test) split of one snapshot table (``churn.definition = "label"``).

    The test rows keep the churn rate of the whole table and stay untouched until the end; the
    model is chosen by cross-validation on the development rows (:func:`fold_positions`).
    """
    if not 0 < test_size < 0.5:
        raise ValueError(f"test_size must be in (0, 0.5), got {test_size}")
    if "label" not in snapshot.columns:
        raise ValueError("the snapshot table needs a 'label' column")
    dev, test = train_test_split(snapshot, test_size=test_size, stratify=snapshot["label"], random_state=seed)
    return dev.reset_index(drop=True), test.reset_index(drop=True)


def plan_for(tables: Tables, settings: Settings) -> SplitPlan:
    """The as-of dates this data supports: out of time for event data, one snapshot for tables.

    Event data get up to ``N_VALID_DATES`` rolling-origin validation dates, fewer when the history
    is too short for them (down to one; the error then says how many days the plan needs).
    """
    if settings.churn.definition == "label":
        return snapshot_plan(snapshot_as_of(tables))
    ev = tables.events
    if ev is None or not len(ev):
        raise TrainingDataError(
            f"there are no events before {tables.end_date.date()}: nothing to learn from. Check "
            "data.events, or choose a later --as-of (the as-of date must come after the data start)."
        )
    start = ev["event_time"].min()
    cfg = settings.training
    for n_valid in range(N_VALID_DATES, 1, -1):
        try:
            return plan_as_of_dates(tables.end_date, settings.churn.horizon_days, cfg.step_days,
                                    cfg.n_train_snapshots, n_valid=n_valid, data_start=start)
        except TrainingDataError:
            continue
    return plan_as_of_dates(tables.end_date, settings.churn.horizon_days, cfg.step_days,
                            cfg.n_train_snapshots, data_start=start)


def training_snapshots(tables: Tables, plan: SplitPlan, settings: Settings, schema: FeatureSchema
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(development, test) feature+label tables of a plan: every labelled row the model may be
    chosen and fitted on, and the rows it is tested on (stratified when not out of time)."""
    if not plan.out_of_time:
        snap = build_snapshots(tables, [plan.test], settings, schema)
        check_labels(snap, "the snapshot table")
        return holdout_split(snap, settings.training.test_size, settings.training.seed)
    snap = build_snapshots(tables, plan.all_dates, settings, schema)
    as_of = pd.to_datetime(snap["as_of"])
    for date in plan.all_dates:
        if not (as_of == date).any():
            raise TrainingDataError(
                f"no customer is active at the as-of date {date.date()} (planned dates: "
                f"{[d.date().isoformat() for d in plan.all_dates]}): the data hold no customer with "
                "activity before that date. Check data.events and the dates in it, or lower "
                "training.n_train_snapshots so the plan starts later."
            )
    dev = snap[as_of < plan.test].reset_index(drop=True)
    test = snap[as_of == plan.test].reset_index(drop=True)
    return dev, test


def check_labels(frame: pd.DataFrame, what: str, min_per_class: int = 2) -> None:
    """Refuse labels of one class, or too few of the rarer one, naming the rows in question."""
    counts = frame["label"].value_counts()
    churners, stayers = int(counts.get(1, 0)), int(counts.get(0, 0))
    if min(churners, stayers) < min_per_class:
        raise TrainingDataError(
            f"{what} has {churners} churner(s) (label 1) and {stayers} non-churner(s) (label 0) "
            f"among {len(frame)} customer(s): a model needs at least {min_per_class} of each to learn "
            "and be tested. Check the label column (data.columns.label) or churn.definition, and "
            "provide more customers or a longer history."
        )


def fold_positions(dev: pd.DataFrame, plan: SplitPlan, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, validation rows) of each fold, as positions in ``dev``.

    Event data: one fold per rolling origin of the plan. Snapshot tables: repeated stratified
    k-fold (``CV_FOLDS`` x ``CV_REPEATS``), with fewer folds when the rarer class has fewer than
    ``MIN_PER_CLASS_AND_FOLD`` customers per fold.
    """
    if plan.out_of_time:
        as_of = pd.to_datetime(dev["as_of"]).to_numpy()
        folds = []
        for train_dates, valid_date in plan.folds:
            train_pos = np.flatnonzero(np.isin(as_of, pd.DatetimeIndex(train_dates).as_unit("ns").to_numpy()))
            valid_pos = np.flatnonzero(as_of == pd.Timestamp(valid_date).as_unit("ns").to_datetime64())
            check_labels(dev.iloc[train_pos], f"the training snapshots before {valid_date.date()}", 1)
            check_labels(dev.iloc[valid_pos], f"the validation snapshot at {valid_date.date()}", 1)
            folds.append((train_pos, valid_pos))
        return folds
    y = dev["label"].to_numpy()
    check_labels(dev, "the training part of the snapshot table", 2 * MIN_PER_CLASS_AND_FOLD)
    n_splits = min(CV_FOLDS, int(min(np.bincount(y.astype(np.int64), minlength=2))) // MIN_PER_CLASS_AND_FOLD)
    cv = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=CV_REPEATS, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y))
