"""As-of date planning and row splits (training/split.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.split import plan_as_of_dates, snapshot_plan, split_snapshots, stratified_split

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


def test_stratified_split_for_snapshot_tables() -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"customer_id": range(1000), "label": (rng.random(1000) < 0.2).astype("int8")})
    train, valid, test = stratified_split(table, 0.2, seed=1)
    assert len(test) == 200 and len(valid) == 200 and len(train) == 600
    ids = [set(p["customer_id"]) for p in (train, valid, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    rate = table["label"].mean()
    for part in (train, valid, test):
        assert abs(part["label"].mean() - rate) < 0.01
    again = stratified_split(table, 0.2, seed=1)
    assert again[2]["customer_id"].tolist() == test["customer_id"].tolist()
    assert not snapshot_plan(pd.Timestamp("2024-05-05 13:00")).out_of_time
