"""As-of date planning and row splits (training/split.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnflow.training.errors import TrainingDataError
from churnflow.training.split import (
    fold_positions,
    holdout_split,
    plan_as_of_dates,
    snapshot_plan,
    split_snapshots,
)

DAY = pd.Timedelta(days=1)


@pytest.mark.parametrize("data_end", ["2024-12-31", "2024-12-31 17:45", "2025-03-01"])
@pytest.mark.parametrize(("horizon", "step", "n_train"), [(90, 30, 6), (30, 7, 3), (60, 60, 1)])
def test_plan_windows_never_overlap(data_end: str, horizon: int, step: int, n_train: int) -> None:
    end = pd.Timestamp(data_end)
    plan = plan_as_of_dates(end, horizon, step, n_train)
    h = pd.Timedelta(days=horizon)
    assert plan.out_of_time
    assert len(plan.train) == n_train == len(set(plan.train))
    assert plan.train == sorted(plan.train)
    for t in [*plan.train, plan.valid, plan.test]:
        assert t == t.normalize(), "as-of dates are midnights"
    # label windows [T, T+H): every training window ends by T_valid, valid's by T_test
    assert all(t + h <= plan.valid for t in plan.train)
    assert max(plan.train) + h == plan.valid
    assert plan.valid + h <= plan.test
    # test window complete, and T_test is the latest such midnight
    assert plan.test + h <= end + DAY
    assert plan.test + DAY + h > end + DAY
    steps = np.diff([t.value for t in plan.train])
    assert (steps == pd.Timedelta(days=step).value).all()


def test_plan_refuses_short_data_and_says_how_many_days() -> None:
    end = pd.Timestamp("2024-12-31")
    start = end - pd.Timedelta(days=300)
    with pytest.raises(ValueError, match=r"needs at least \d+ days"):
        plan_as_of_dates(end, 90, 30, 6, data_start=start)
    # 3 x 90 + 0 x 30 fits into 300 days with 20 days of history
    plan = plan_as_of_dates(end, 90, 30, 1, data_start=start, min_history_days=20)
    assert plan.train[0] >= start + pd.Timedelta(days=20)
    with pytest.raises(ValueError, match="must be positive"):
        plan_as_of_dates(end, 0, 30, 1)


def test_split_snapshots_by_as_of() -> None:
    plan = plan_as_of_dates(pd.Timestamp("2024-12-31"), 30, 15, 2)
    frames = [
        pd.DataFrame({"customer_id": range(5), "as_of": d, "label": [0, 1, 0, 1, 0]})
        for d in [*plan.all_dates, pd.Timestamp("2020-01-01")]
    ]
    snaps = pd.concat(frames, ignore_index=True)
    train, valid, test = split_snapshots(snaps, plan)
    assert set(train["as_of"]) == set(plan.train)
    assert set(valid["as_of"]) == {plan.valid}
    assert set(test["as_of"]) == {plan.test}
    with pytest.raises(ValueError, match="no test rows"):
        split_snapshots(snaps[snaps["as_of"] != plan.test], plan)


def test_holdout_and_repeated_stratified_folds_for_snapshot_tables() -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"customer_id": range(1000), "label": (rng.random(1000) < 0.2).astype("int8")})
    dev, test = holdout_split(table, 0.2, seed=1)
    assert len(test) == 200 and len(dev) == 800
    assert not set(dev["customer_id"]) & set(test["customer_id"])
    rate = table["label"].mean()
    for part in (dev, test):
        assert abs(part["label"].mean() - rate) < 0.01
    again = holdout_split(table, 0.2, seed=1)
    assert again[1]["customer_id"].tolist() == test["customer_id"].tolist()
    plan = snapshot_plan(pd.Timestamp("2024-05-05 13:00"))
    assert not plan.out_of_time and plan.folds == []
    folds = fold_positions(dev, plan, seed=1)
    assert len(folds) == 10  # 5 folds x 2 repeats
    for train_pos, valid_pos in folds:
        assert not set(train_pos) & set(valid_pos) and len(train_pos) + len(valid_pos) == len(dev)
        assert abs(dev["label"].iloc[valid_pos].mean() - rate) < 0.02
    # each repeat covers every development row exactly once
    assert sorted(np.concatenate([v for _, v in folds[:5]])) == list(range(len(dev)))
    # few churners: fewer folds, still two churners per fold
    few = dev.assign(label=0)
    few.loc[few.index[:6], "label"] = 1
    assert len(fold_positions(few, plan, seed=1)) == 3 * 2


@pytest.mark.parametrize(("horizon", "step", "n_train"), [(90, 30, 3), (30, 7, 2), (60, 60, 1)])
def test_rolling_origin_folds_never_see_their_validation_labels(horizon: int, step: int, n_train: int) -> None:
    plan = plan_as_of_dates(pd.Timestamp("2024-12-31"), horizon, step, n_train, n_valid=3)
    h = pd.Timedelta(days=horizon)
    assert len(plan.valid_dates) == 3 and plan.valid_dates[-1] == plan.valid == plan.test - h
    assert np.all(np.diff([v.value for v in plan.valid_dates]) == pd.Timedelta(days=step).value)
    assert len(plan.folds) == 3
    for train_dates, valid_date in plan.folds:
        assert len(train_dates) == n_train
        assert all(t + h <= valid_date for t in train_dates)
        assert max(train_dates) + h == valid_date  # the latest complete window before it
    assert plan.all_dates[-1] == plan.test and all(d + h <= plan.test for d in plan.all_dates[:-1])


def test_fold_positions_refuse_one_class_in_a_validation_date() -> None:
    plan = plan_as_of_dates(pd.Timestamp("2024-12-31"), 30, 15, 1, n_valid=2)
    frames = [pd.DataFrame({"customer_id": range(6), "as_of": d, "label": [0, 1, 0, 1, 0, 1]})
              for d in plan.all_dates if d < plan.test]
    dev = pd.concat(frames, ignore_index=True)
    assert len(fold_positions(dev, plan, seed=0)) == 2
    dev.loc[dev["as_of"] == plan.valid, "label"] = 0
    with pytest.raises(TrainingDataError, match=rf"validation snapshot at {plan.valid.date()} has 0 churner"):
        fold_positions(dev, plan, seed=0)
    one_class = pd.DataFrame({"customer_id": range(50), "label": 0})
    with pytest.raises(TrainingDataError, match="0 churner.*data.columns.label"):
        fold_positions(one_class, snapshot_plan(pd.Timestamp("2024-01-01")), seed=0)
