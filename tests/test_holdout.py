"""The control-group draw: reproducible, stratified, blind to risk, off at share 0."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from churnflow.features.settings import Settings
from churnflow.serving.holdout import (
    HOLDOUT_ACTION,
    STATUS_HELD_EARLIER,
    STATUS_HOLDOUT,
    assign_holdout,
    holdout_draw,
    holdout_summary,
    open_holdout_ids,
    systematic_selection,
)
from churnflow.serving.priority import STATUS_SUPPRESSED, build_priority_list

AS_OF = pd.Timestamp("2026-03-02")


def ranked_list(n: int, seed: int = 0) -> pd.DataFrame:
    """A ranked list with uneven strata (3 tiers x 4 segments) and a few suppressed rows."""
    rng = np.random.default_rng(seed)
    p = np.sort(rng.uniform(0.05, 0.95, n))[::-1]
    tier = np.where(p >= 0.5, "high", np.where(p >= 0.2, "medium", "low"))
    segment = rng.choice(["champions", "loyal", "at risk", "new"], size=n, p=[0.5, 0.3, 0.15, 0.05])
    status = np.where(rng.uniform(size=n) < 0.03, STATUS_SUPPRESSED, "new").astype(object)
    rank = pd.array(np.full(n, pd.NA), dtype="Int64")
    ok = status != STATUS_SUPPRESSED
    rank[ok] = np.arange(1, ok.sum() + 1)
    return pd.DataFrame({
        "rank": rank, "customer_id": rng.permutation(10 * n)[:n] + 1, "churn_probability": p,
        "risk_tier": tier, "segment": segment, "recommended_action": "win-back offer",
        "channel": "email", "status": status,
    })


def held_ids(frame: pd.DataFrame) -> set:
    return set(frame.loc[frame["status"] == STATUS_HOLDOUT, "customer_id"])


def test_draw_depends_only_on_date_seed_and_customer():
    ids = np.arange(1, 2001)
    whole = holdout_draw(ids, AS_OF, seed=7)
    parts = np.concatenate([holdout_draw(ids[i:i + 300], AS_OF, seed=7) for i in range(0, 2000, 300)])
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(whole, holdout_draw([str(i) for i in ids], AS_OF, seed=7))
    assert ((whole >= 0) & (whole < 1)).all()
    assert abs(whole.mean() - 0.5) < 0.03
    assert not np.array_equal(whole, holdout_draw(ids, AS_OF + pd.Timedelta(days=7), seed=7))
    assert not np.array_equal(whole, holdout_draw(ids, AS_OF, seed=8))


def test_rerun_and_row_order_hold_back_the_same_customers():
    frame = ranked_list(3000)
    first = assign_holdout(frame, AS_OF, 0.1, seed=3)
    again = assign_holdout(frame, AS_OF, 0.1, seed=3)
    shuffled = assign_holdout(frame.sample(frac=1.0, random_state=1), AS_OF, 0.1, seed=3)
    assert held_ids(first) == held_ids(again) == held_ids(shuffled)
    pd.testing.assert_frame_equal(first, again)
    assert held_ids(first) != held_ids(assign_holdout(frame, AS_OF + pd.Timedelta(days=7), 0.1, seed=3))


def test_every_stratum_holds_back_its_share_within_rounding():
    frame = ranked_list(3000)
    share = 0.15
    out = assign_holdout(frame, AS_OF, share)
    pool = out[out["status"] != STATUS_SUPPRESSED]
    counts = pool.groupby(["risk_tier", "segment"])["status"].agg(n="size", held=lambda s: (s == STATUS_HOLDOUT).sum())
    assert len(counts) == 12
    assert (np.abs(counts["held"] - share * counts["n"]) < 1).all()
    assert abs(counts["held"].sum() - share * counts["n"].sum()) < 1
    # suppressed customers are not part of the draw
    assert (out.loc[out["customer_id"].isin(frame.loc[frame["status"] == STATUS_SUPPRESSED, "customer_id"]),
                    "status"] == STATUS_SUPPRESSED).all()


def test_draw_is_blind_to_risk_within_a_stratum():
    n = 20_000
    frame = ranked_list(n).assign(risk_tier="high", segment="loyal", status="new",
                                  rank=pd.array(np.arange(1, n + 1), dtype="Int64"))
    rho = spearmanr(holdout_draw(frame["customer_id"], AS_OF), frame["churn_probability"]).statistic
    assert abs(rho) < 0.03  # SE ~ 0.007 under independence
    out = assign_holdout(frame, AS_OF, 0.1)
    held = out["status"] == STATUS_HOLDOUT
    # the control group's risk matches the contacted group's (standard error ~0.002)
    assert abs(out.loc[held, "churn_probability"].mean() - out.loc[~held, "churn_probability"].mean()) < 0.015


def test_every_customer_is_held_back_with_probability_share_even_alone_in_a_stratum():
    """Over many list dates a singleton stratum is held back ~share of the time, not always."""
    frame = ranked_list(40)
    frame.loc[0, ["risk_tier", "segment"]] = ["high", "only me"]
    frame.loc[0, "status"] = "new"
    lone = frame.loc[0, "customer_id"]
    dates = pd.date_range("2024-01-01", periods=150, freq="D")
    rate = np.mean([lone in held_ids(assign_holdout(frame, d, 0.2)) for d in dates])
    assert abs(rate - 0.2) < 0.1  # binomial SE 0.033; "always held back" would give 1.0


def test_held_back_rows_leave_the_teams_list_and_the_rest_is_renumbered():
    frame = ranked_list(500)
    out = assign_holdout(frame, AS_OF, 0.1)
    held = out["status"] == STATUS_HOLDOUT
    assert held.sum() > 0
    assert out.loc[held, "rank"].isna().all()
    assert (out.loc[held, "recommended_action"] == HOLDOUT_ACTION).all()
    assert (out.loc[held, "channel"] == "none").all()
    ranks = out["rank"].dropna().to_numpy()
    np.testing.assert_array_equal(ranks, np.arange(1, len(ranks) + 1))
    assert len(ranks) + held.sum() == frame["rank"].notna().sum()  # the list shrinks, no refill
    assert held.to_numpy()[-held.sum():].all()  # held-back rows come last
    # the contacted customers keep their priority order
    kept = frame.loc[frame["customer_id"].isin(out.loc[out["rank"].notna(), "customer_id"])]
    np.testing.assert_array_equal(kept.sort_values("rank")["customer_id"],
                                  out.dropna(subset=["rank"]).sort_values("rank")["customer_id"])


def test_share_zero_holds_back_nobody():
    frame = ranked_list(300)
    pd.testing.assert_frame_equal(assign_holdout(frame, AS_OF, 0.0), frame)
    with pytest.raises(ValueError):
        assign_holdout(frame, AS_OF, 1.0)


def test_systematic_selection_counts():
    for share in (0.05, 0.1, 0.33):
        for start in (0.0, 0.37, 0.999):
            chosen = systematic_selection(101, share, start)
            for a, b in ((0, 101), (0, 17), (40, 93)):
                assert abs(chosen[a:b].sum() - share * (b - a)) < 1


def test_works_on_a_real_priority_list():
    rng = np.random.default_rng(0)
    n = 400
    p = rng.uniform(0, 1, n)
    scored = pd.DataFrame({
        "customer_id": np.arange(1, n + 1), "churn_probability": p, "value_at_risk": p * 100,
        "segment": rng.choice(["loyal", "new"], n), "reason_1": "", "reason_2": "", "reason_3": "",
        "reason_group_1": "recency",
    })
    contacts = pd.DataFrame({"customer_id": [1, 2, 3], "contact_time": [AS_OF - pd.Timedelta(days=3)] * 3})
    settings = Settings()
    settings.serving.capacity = 200
    plist, _ = build_priority_list(scored, settings, contacts=contacts, as_of=AS_OF)
    out = assign_holdout(plist, AS_OF, settings.serving.holdout_share)
    assert (out["status"] == STATUS_HOLDOUT).sum() == 20
    assert out["rank"].max() == 180
    assert list(out.columns) == list(plist.columns)


def test_an_earlier_lists_open_holdout_is_not_contacted_nor_redrawn():
    earlier = {"2026-01-05": [1, 2], "2026-02-23": ["3", 4], "2026-03-02": [5], "2025-11-01": [6]}
    assert open_holdout_ids(earlier, AS_OF, 90) == {"1", "2", "3", "4"}  # not the same day, not expired
    frame = ranked_list(400)
    kept_out = {str(c) for c in frame.loc[frame["status"] == "new", "customer_id"][:25]}
    out = assign_holdout(frame, AS_OF, 0.1, open_holdouts=kept_out)
    earlier_rows = out["status"] == STATUS_HELD_EARLIER
    assert set(out.loc[earlier_rows, "customer_id"].astype(str)) == kept_out
    assert out.loc[earlier_rows, "rank"].isna().all()
    assert (out.loc[earlier_rows, "recommended_action"] == HOLDOUT_ACTION).all()
    pool = (frame["status"] == "new").sum() - 25
    assert abs((out["status"] == STATUS_HOLDOUT).sum() - 0.1 * pool) < 1
    assert out["rank"].max() == pool - (out["status"] == STATUS_HOLDOUT).sum()
    only_earlier = assign_holdout(frame, AS_OF, 0.0, open_holdouts=kept_out)
    assert (only_earlier["status"] == STATUS_HELD_EARLIER).sum() == 25
    assert not (only_earlier["status"] == STATUS_HOLDOUT).any()


def test_summary_says_how_many_and_why():
    out = assign_holdout(ranked_list(500), AS_OF, 0.1)
    summary = holdout_summary(out, 0.1)
    assert summary["n_holdout"] == (out["status"] == STATUS_HOLDOUT).sum() > 0
    assert "control group" in summary["holdout_why"] and "10%" in summary["holdout_why"]
    assert "cannot be measured" in holdout_summary(ranked_list(50), 0.0)["holdout_why"]
