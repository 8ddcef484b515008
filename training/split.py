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

import pandas as pd
from sklearn.model_selection import train_test_split

from features.build import build_snapshots, snapshot_as_of
from features.contracts import Tables
from features.schema import FeatureSchema
from features.settings import Settings


@dataclass(frozen=True)
class SplitPlan:
    """As-of dates of the training, validation and test snapshots.

    ``out_of_time`` is False for snapshot tables (one period, stratified split): the evaluation
    then overstates what the model will do next month, and reports say so.
    """

    train: list[pd.Timestamp] = field(default_factory=list)
    valid: pd.Timestamp | None = None
    test: pd.Timestamp | None = None
    out_of_time: bool = True

    @property
    def all_dates(self) -> list[pd.Timestamp]:
        return sorted({*self.train, *(d for d in (self.valid, self.test) if d is not None)})

    def to_dict(self) -> dict[str, object]:
        """Plain strings for logging (MLflow params, JSON)."""
        return {
            "train": [d.date().isoformat() for d in self.train],
            "valid": self.valid.date().isoformat() if self.valid is not None else None,
            "test": self.test.date().isoformat() if self.test is not None else None,
            "out_of_time": self.out_of_time,
        }


def plan_as_of_dates(
    data_end: pd.Timestamp,
    horizon_days: int,
    step_days: int,
    n_train: int,
    *,
    data_start: pd.Timestamp | None = None,
    min_history_days: int = 0,
) -> SplitPlan:
    """Plan out-of-time as-of dates ending at the last complete label window.

    - ``T_test``: the latest midnight with ``T_test + H <= data_end + 1 day`` (the last day of the
      data counts fully, so its label window is complete).
    - ``T_valid = T_test - H``: its label window ends exactly where the test one starts.
    - ``T_k = T_valid - H - k * step`` for ``k = 0 .. n_train - 1``: every training label window
      ends on or before ``T_valid``.

    When ``data_start`` is given, the earliest training date must leave ``min_history_days`` of
    history before it; otherwise a ValueError says how many days of data the plan needs.
    """
    if horizon_days <= 0 or step_days <= 0 or n_train < 1:
        raise ValueError(
            f"horizon_days ({horizon_days}) and step_days ({step_days}) must be positive and "
            f"n_train ({n_train}) at least 1"
        )
    end = pd.Timestamp(data_end)
    horizon = pd.Timedelta(days=horizon_days)
    step = pd.Timedelta(days=step_days)
    t_test = (end + pd.Timedelta(days=1) - horizon).normalize()
    t_valid = t_test - horizon
    train = [t_valid - horizon - k * step for k in range(n_train)]
    train.sort()
    needed = 3 * horizon_days + (n_train - 1) * step_days + min_history_days
    if data_start is not None:
        start = pd.Timestamp(data_start).normalize()
        earliest_allowed = start + pd.Timedelta(days=min_history_days)
        if train[0] < earliest_allowed or train[0] <= start:
            have = (end.normalize() - start).days + 1
            raise ValueError(
                f"the data cover {have} days ({start.date()} to {end.date()}) but the plan needs "
                f"at least {needed + 1} days: 3 x horizon_days ({horizon_days}, for the training "
                f"label window, validation and test) + (n_train_snapshots - 1) x step_days "
                f"({n_train - 1} x {step_days}) + {min_history_days} days of feature history. "
                "Lower churn.horizon_days, training.n_train_snapshots or training.step_days, "
                "or provide more history."
            )
    return SplitPlan(train=train, valid=t_valid, test=t_test, out_of_time=True)


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


def stratified_split(
    snapshot: pd.DataFrame, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Stratified train/valid/test split of one snapshot table (``churn.definition = "label"``).

    Validation (early stopping, calibration) and test each get ``test_size`` of the rows, with the
    churn rate of the whole table. Not out-of-time: use :func:`snapshot_plan` for the plan.
    """
    if not 0 < test_size < 0.5:
        raise ValueError(f"test_size must be in (0, 0.5), got {test_size}")
    if "label" not in snapshot.columns:
        raise ValueError("the snapshot table needs a 'label' column")
    rest, test = train_test_split(
        snapshot, test_size=test_size, stratify=snapshot["label"], random_state=seed
    )
    train, valid = train_test_split(
        rest, test_size=test_size / (1 - test_size), stratify=rest["label"], random_state=seed
    )
    return train, valid, test


def plan_for(tables: Tables, settings: Settings) -> SplitPlan:
    """The as-of dates this data supports: out of time for event data, one snapshot for tables."""
    if settings.churn.definition == "label":
        return snapshot_plan(snapshot_as_of(tables))
    ev = tables.events
    start = ev["event_time"].min() if ev is not None and len(ev) else None
    return plan_as_of_dates(tables.end_date, settings.churn.horizon_days, settings.training.step_days,
                            settings.training.n_train_snapshots, data_start=start)


def training_snapshots(tables: Tables, plan: SplitPlan, settings: Settings, schema: FeatureSchema
                       ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train / valid / test feature+label tables for a plan (stratified when not out of time)."""
    if not plan.out_of_time:
        snap = build_snapshots(tables, [plan.test], settings, schema)
        return stratified_split(snap, settings.training.test_size, settings.training.seed)
    snap = build_snapshots(tables, [*plan.train, plan.valid, plan.test], settings, schema)
    return split_snapshots(snap, plan)
