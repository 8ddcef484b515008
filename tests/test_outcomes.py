"""Report cards on simulated lists whose true campaign effect and calibration are known."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churnflow.features.contracts import Tables
from churnflow.serving.holdout import STATUS_HOLDOUT, assign_holdout
from churnflow.serving.outcomes import (
    OUTCOME_FILE,
    OutcomeError,
    campaign_effect,
    decay_alarm,
    expected_performance,
    mlflow_step,
    outcome_card,
    outcome_groups,
    realised_metrics,
    weighted_ece,
    write_outcome_once,
)
from churnflow.training.calibration import expected_calibration_error

AS_OF = pd.Timestamp("2026-03-02")
H = 90
WINDOW_END = AS_OF + pd.Timedelta(days=H)


@dataclass
class SimulatedList:
    scores: pd.DataFrame
    tables: Tables
    true_effect: float
    """Intention-to-treat difference in churn probability, contacted minus holdout."""


def simulate_list(seed: int, n: int = 3000, list_size: int = 900, share: float = 0.2,
                  effect: float = -0.1, reach: float = 1.0) -> SimulatedList:
    """Calibrated scores, a ranked list with a holdout, a retention team and the events that follow.

    Untouched customers churn with exactly their score ``p`` (calibration is perfect); a listed,
    non-holdout customer the team reaches churns with ``clip(p + effect, 0, 1)``. Churners have no
    event in ``[T, T+H)`` (the inactivity definition); everyone has history before ``T`` and,
    as a trap for leaks, an event after ``T + H``.
    """
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    p = rng.beta(2, 5, n)
    value = rng.lognormal(3, 0.5, n)
    segment = rng.choice(["loyal", "new", "at risk"], n)
    tier = np.where(p >= 0.5, "high", np.where(p >= 0.2, "medium", "low"))
    order = np.argsort(-value * p, kind="stable")
    rank = pd.array(np.full(n, pd.NA), dtype="Int64")
    rank[order[:list_size]] = np.arange(1, list_size + 1)
    plist = pd.DataFrame({"rank": rank, "customer_id": ids, "risk_tier": tier, "segment": segment,
                          "status": np.where(rank.isna(), "", "new").astype(object)})
    plist = assign_holdout(plist[plist["rank"].notna()], AS_OF, share, seed=seed)
    status = pd.Series(ids).map(plist.set_index("customer_id")["status"]).fillna("unlisted").to_numpy(object)

    assigned = status == "new"
    reached = assigned & (rng.uniform(size=n) < reach)
    q = np.where(reached, np.clip(p + effect, 0, 1), p)
    frame = np.isin(status, ["new", STATUS_HOLDOUT])
    true_effect = float(np.mean(np.clip(p[frame] + effect, 0, 1) - p[frame]) * reach)
    churned = rng.uniform(size=n) < q

    def at(days: np.ndarray) -> np.ndarray:
        return (AS_OF + pd.to_timedelta(days, unit="D")).to_numpy()

    stay = ids[~churned]
    events = pd.DataFrame({
        "customer_id": np.r_[ids, stay, ids],
        "event_time": np.r_[at(-rng.integers(1, 300, n)), at(rng.integers(0, H, len(stay))),
                            at(H + rng.integers(0, 5, n))],
        "amount": rng.uniform(5, 50, 2 * n + len(stay)),
    }).sort_values(["customer_id", "event_time"], kind="mergesort", ignore_index=True)
    contacts = pd.DataFrame({
        "customer_id": np.r_[ids[reached], ids[: n // 10]],
        "contact_time": np.r_[at(np.full(reached.sum(), 2)), at(-rng.integers(1, 200, n // 10))],
    })
    customers = pd.DataFrame({"customer_id": ids, "signup_time": at(np.full(n, -400)),
                              "churn_time": pd.NaT})
    tables = Tables(customers=customers, events=events, contacts=contacts,
                    end_date=WINDOW_END + pd.Timedelta(days=5))
    scores = pd.DataFrame({"customer_id": ids, "as_of": AS_OF, "churn_probability": p, "risk_tier": tier,
                           "value_at_risk": value * p, "segment": segment, "model_version": "3",
                           "status": status})
    return SimulatedList(scores, tables, true_effect)


def card_of(sim: SimulatedList, definition: str = "inactivity") -> dict:
    return outcome_card(sim.scores, sim.tables, H, definition)


def test_effect_interval_covers_the_true_effect_in_at_least_90_percent_of_seeds():
    seeds = range(50)
    covered, estimates = [], []
    for seed in seeds:
        sim = simulate_list(seed, n=1500, list_size=1000, share=0.25, effect=-0.1, reach=0.8)
        campaign = card_of(sim)["campaign"]
        assert campaign["conclusive"], campaign["verdict"]
        lo, hi = campaign["difference_ci95"]
        covered.append(lo <= sim.true_effect <= hi)
        estimates.append(campaign["difference"] - sim.true_effect)
    assert np.mean(covered) >= 0.9
    assert abs(np.mean(estimates)) < 0.01  # unbiased: the holdout is a fair comparison


def test_card_fields_on_a_simulated_list():
    sim = simulate_list(1, reach=0.5)
    card = card_of(sim)
    assert card["as_of"] == "2026-03-02" and card["horizon_end"] == "2026-05-31"
    assert card["model_version"] == "3"
    assert card["groups"] == {"contact": 720, "holdout": 180, "held earlier": 0, "suppressed": 0, "unlisted": 2100}
    campaign = card["campaign"]
    assert campaign["reached_share"] == pytest.approx(0.5, abs=0.06)
    assert campaign["holdout_contacted"] == int(
        sim.scores.loc[sim.scores["status"] == STATUS_HOLDOUT, "customer_id"].isin(
            sim.tables.contacts.loc[sim.tables.contacts["contact_time"] >= AS_OF, "customer_id"]).sum())
    assert campaign["value_retained"] == pytest.approx(
        -campaign["difference"] * (sim.scores["value_at_risk"] / sim.scores["churn_probability"])[
            sim.scores["status"] == "new"].sum())
    quality = card["model_quality"]
    assert quality["list_precision"] == pytest.approx(
        1 - sim.scores.loc[sim.scores["status"] == STATUS_HOLDOUT, "customer_id"].isin(
            sim.tables.events.loc[(sim.tables.events["event_time"] >= AS_OF)
                                  & (sim.tables.events["event_time"] < WINDOW_END), "customer_id"]).mean())
    assert len(quality["calibration_by_decile"]) == 10
    json.dumps(card)  # JSON-ready as it is
    assert card["estimate_before_horizon"]["estimate"] is True
    metrics = realised_metrics(card)
    assert {"realised_roc_auc", "realised_list_precision", "realised_campaign_difference"} <= set(metrics)


def test_a_contacted_customer_who_stays_is_not_a_model_error():
    """Whatever happens to contacted customers, the model's realised quality does not change."""
    sim = simulate_list(2, effect=-0.2)
    card = card_of(sim)
    reached = sim.tables.contacts.loc[sim.tables.contacts["contact_time"] >= AS_OF, "customer_id"]
    # every reached customer now stays (the perfect campaign) ...
    keep = sim.tables.events
    saved = pd.DataFrame({"customer_id": reached.to_numpy(), "event_time": AS_OF + pd.Timedelta(days=10),
                          "amount": 1.0})
    stays = Tables(customers=sim.tables.customers, contacts=sim.tables.contacts, end_date=sim.tables.end_date,
                   events=pd.concat([keep, saved]).sort_values(["customer_id", "event_time"], ignore_index=True))
    better = card_of(SimulatedList(sim.scores, stays, sim.true_effect))
    assert better["campaign"]["churn_rate_contact"] == 0.0
    assert better["model_quality"] == card["model_quality"]
    assert better["realised_churn_rate"] < card["realised_churn_rate"]
    # ... and an unlisted customer contacted by another campaign in the window is left out too
    extra = pd.DataFrame({"customer_id": sim.scores.loc[sim.scores["status"] == "unlisted", "customer_id"][:50],
                          "contact_time": AS_OF + pd.Timedelta(days=3)})
    touched = Tables(customers=sim.tables.customers, events=sim.tables.events, end_date=sim.tables.end_date,
                     contacts=pd.concat([sim.tables.contacts, extra], ignore_index=True))
    assert card_of(SimulatedList(sim.scores, touched, 0))["model_quality"]["n_customers"] == (
        card["model_quality"]["n_customers"] - 50)


def test_weights_make_the_untouched_customers_stand_for_everyone():
    """With no effect, the weighted untouched customers reproduce the whole population's numbers."""
    sim = simulate_list(3, n=20_000, list_size=6000, share=0.1, effect=0.0)
    card = card_of(sim)
    quality = card["model_quality"]
    assert quality["churn_rate"] == pytest.approx(card["realised_churn_rate"], abs=0.01)
    w = sim.tables.events
    active = sim.scores["customer_id"].isin(w.loc[(w["event_time"] >= AS_OF) & (w["event_time"] < WINDOW_END),
                                                  "customer_id"])
    everyone_auc = roc_auc_score(~active, sim.scores["churn_probability"])
    assert quality["roc_auc"] == pytest.approx(everyone_auc, abs=0.02)
    assert quality["ece"] < 0.03  # the simulated model is calibrated
    for row in quality["calibration_by_decile"]:
        assert row["observed"] == pytest.approx(row["predicted"], abs=0.07)
    # the label-free estimate made at the list date is close to what happened
    estimate = card["estimate_before_horizon"]
    assert estimate["list_precision"] == pytest.approx(quality["list_precision"], abs=0.04)
    assert estimate["roc_auc"] == pytest.approx(quality["roc_auc"], abs=0.02)
    assert estimate["expected_ece"] < 0.03


def _mutated_outside_window(sim: SimulatedList, rng: np.random.Generator) -> Tables:
    ev, co = sim.tables.events, sim.tables.contacts
    before, after = ev["event_time"] < AS_OF, ev["event_time"] >= WINDOW_END
    ev = ev.loc[~before | (rng.uniform(size=len(ev)) < 0.5)].copy()  # drop half the history
    ev.loc[ev["event_time"] < AS_OF, "amount"] *= 3.0
    late = pd.DataFrame({"customer_id": sim.scores["customer_id"], "event_time": WINDOW_END, "amount": 1.0})
    ev = pd.concat([ev, late]).sort_values(["customer_id", "event_time"], ignore_index=True)
    co = pd.concat([co[co["contact_time"] >= AS_OF], pd.DataFrame({
        "customer_id": sim.scores["customer_id"][:500],
        "contact_time": np.r_[np.full(250, AS_OF - pd.Timedelta(seconds=1)), np.full(250, WINDOW_END)]})],
        ignore_index=True)
    cu = sim.tables.customers.assign(churn_time=AS_OF - pd.Timedelta(days=400))
    cu.loc[cu.index[:100], "churn_time"] = WINDOW_END + pd.Timedelta(hours=1)
    assert before.any() and after.any()
    return Tables(customers=cu, events=ev, contacts=co, end_date=sim.tables.end_date)


@pytest.mark.parametrize("definition", ["inactivity", "explicit"])
def test_card_reads_only_the_horizon(definition):
    """Mutating anything before T or from T + H on leaves the card unchanged; inside, it changes."""
    sim = simulate_list(4)
    if definition == "explicit":
        churners = ~sim.scores["customer_id"].isin(sim.tables.events.loc[
            (sim.tables.events["event_time"] >= AS_OF) & (sim.tables.events["event_time"] < WINDOW_END),
            "customer_id"])
        customers = sim.tables.customers.assign(churn_time=pd.NaT)
        customers.loc[churners.to_numpy(), "churn_time"] = AS_OF + pd.Timedelta(days=30)
        sim = SimulatedList(sim.scores, Tables(customers=customers, events=sim.tables.events,
                                               contacts=sim.tables.contacts, end_date=sim.tables.end_date), 0)
    card = card_of(sim, definition)
    mutated = _mutated_outside_window(sim, np.random.default_rng(0))
    if definition == "explicit":
        keep = sim.tables.customers["churn_time"].notna().to_numpy()
        mutated.customers.loc[keep, "churn_time"] = sim.tables.customers.loc[keep, "churn_time"]
    assert card_of(SimulatedList(sim.scores, mutated, 0), definition) == card
    # positive control: a change inside the window does change the card
    inside = sim.tables.events.copy()
    in_window = (inside["event_time"] >= AS_OF) & (inside["event_time"] < WINDOW_END)
    if definition == "explicit":
        cu = sim.tables.customers.copy()
        cu.loc[cu["churn_time"].notna().to_numpy(), "churn_time"] = WINDOW_END
        changed = Tables(customers=cu, events=inside, contacts=sim.tables.contacts, end_date=sim.tables.end_date)
    else:
        changed = Tables(customers=sim.tables.customers, events=inside.loc[~in_window], contacts=sim.tables.contacts,
                         end_date=sim.tables.end_date)
    assert card_of(SimulatedList(sim.scores, changed, 0), definition) != card


def test_a_card_waits_for_the_horizon_and_needs_a_dated_churn_definition():
    sim = simulate_list(5, n=400, list_size=100)
    early = Tables(customers=sim.tables.customers, events=sim.tables.events, contacts=sim.tables.contacts,
                   end_date=WINDOW_END - pd.Timedelta(days=2))
    with pytest.raises(OutcomeError, match="after the end of the data"):
        card_of(SimulatedList(sim.scores, early, 0))
    last_day = Tables(customers=sim.tables.customers, events=sim.tables.events, contacts=sim.tables.contacts,
                      end_date=WINDOW_END - pd.Timedelta(days=1))
    assert card_of(SimulatedList(sim.scores, last_day, 0))["n_scored"] == 400
    with pytest.raises(OutcomeError, match="inactivity"):
        card_of(sim, "label")


def test_a_small_holdout_is_reported_in_words_not_numbers():
    sim = simulate_list(6, n=600, list_size=150, share=0.1)
    campaign = card_of(sim)["campaign"]
    assert campaign["n_holdout"] == 15
    assert not campaign["conclusive"]
    assert campaign["difference"] is None and campaign["value_retained"] is None
    assert "Too small to measure" in campaign["verdict"] and "holdout_share" in campaign["verdict"]
    # enough customers but an interval too wide to act on
    group = np.array(["contact"] * 40 + ["holdout"] * 40, dtype=object)
    churned = np.r_[np.ones(20), np.zeros(20), np.ones(20), np.zeros(20)]
    wide = campaign_effect(churned, group, np.zeros(80, bool), np.ones(80))
    assert not wide["conclusive"] and "Too uncertain" in wide["verdict"]


def test_verdict_names_the_direction():
    group = np.array(["contact"] * 2000 + ["holdout"] * 500, dtype=object)
    rng = np.random.default_rng(0)
    churned = np.r_[rng.uniform(size=2000) < 0.2, rng.uniform(size=500) < 0.35]
    effect = campaign_effect(churned, group, np.ones(2500, bool), np.full(2500, 10.0))
    assert effect["conclusive"] and effect["difference_ci95"][1] < 0
    assert effect["verdict"].startswith("The outreach reduced churn by")
    same = campaign_effect(np.r_[churned[:2000], churned[:500]], group, np.ones(2500, bool), np.ones(2500))
    assert same["verdict"].startswith("No effect detectable")


def test_weighted_ece_is_the_training_ece_for_unit_weights():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=5000)
    y = (rng.uniform(size=5000) < p**1.3).astype(float)
    assert weighted_ece(p, y, np.ones(5000)) == pytest.approx(expected_calibration_error(p, y), abs=1e-12)
    w = np.where(p > 0.5, 3.0, 1.0)
    assert weighted_ece(p, y, w) == pytest.approx(
        expected_calibration_error(np.r_[p, p[p > 0.5], p[p > 0.5]], np.r_[y, y[p > 0.5], y[p > 0.5]]), abs=1e-12)


def test_groups_and_label_free_estimate():
    status = pd.Series(["new", "still on", "holdout", "holdout, earlier list", "suppressed", "", None, "x"])
    assert list(outcome_groups(status)) == ["contact", "contact", "holdout", "held earlier", "suppressed",
                                            "unlisted", "unlisted", "unlisted"]
    p = np.r_[np.full(100, 0.6), np.full(900, 0.1)]
    group = np.r_[np.full(100, "contact"), np.full(900, "unlisted")].astype(object)
    est = expected_performance(p, group)
    assert est["list_precision"] == pytest.approx(0.6)
    assert est["list_recall"] == pytest.approx(60 / 150)
    assert est["list_lift"] == pytest.approx(0.6 / 0.15)
    assert 0.5 < est["roc_auc"] < 1


def test_decay_alarm():
    realised = {"2026-01-05": 0.70, "2026-01-12": None, "2026-01-19": 0.69, "2026-01-26": 0.71, "2025-12-01": 0.9}
    alarm = decay_alarm(realised, test_roc_auc=0.80, max_drop=0.05)
    assert alarm["alarm"] and alarm["lists"] == ["2026-01-05", "2026-01-19", "2026-01-26"]
    assert alarm["recent_roc_auc"] == pytest.approx(0.70) and "churnflow train" in alarm["message"]
    calm = decay_alarm(realised, test_roc_auc=0.73, max_drop=0.05)
    assert not calm["alarm"] and calm["message"].startswith("No decay")
    assert not decay_alarm({}, 0.8, 0.05)["alarm"]


def test_outcome_file_is_written_once_and_never_rewritten(tmp_path):
    folder = tmp_path / "2026-03-02"
    folder.mkdir()
    assert write_outcome_once(folder, {"as_of": "2026-03-02", "value": float("nan"), "n": np.int64(3)})
    first = (folder / OUTCOME_FILE).read_bytes()
    assert json.loads(first) == {"as_of": "2026-03-02", "n": 3, "value": None}
    assert not write_outcome_once(folder, {"as_of": "2026-03-02", "value": 1.0})
    assert (folder / OUTCOME_FILE).read_bytes() == first
    assert sorted(p.name for p in folder.iterdir()) == [OUTCOME_FILE]  # no temporary file left


def test_mlflow_step_is_days_since_epoch():
    assert mlflow_step("1970-01-02") == 1
    assert mlflow_step(AS_OF + pd.Timedelta(days=7)) - mlflow_step(AS_OF) == 7


def test_a_concurrent_writer_wins_and_is_not_overwritten(tmp_path, monkeypatch):
    """Another run writes outcome.json between our check and our write: theirs stays."""
    import churnflow.serving.outcomes as outcomes

    real_write = outcomes.write_json

    def racing_write(path, data):
        (tmp_path / OUTCOME_FILE).write_text('{"by": "the other run"}\n')
        real_write(data=data, path=path)

    monkeypatch.setattr(outcomes, "write_json", racing_write)
    assert not write_outcome_once(tmp_path, {"by": "us"})
    assert json.loads((tmp_path / OUTCOME_FILE).read_text()) == {"by": "the other run"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [OUTCOME_FILE]


def test_newcombe_interval_matches_the_published_example():
    """Newcombe (1998), Stat Med 17:873, method 10 for 56/70 - 48/80: 0.0524 to 0.3339."""
    from churnflow.serving.outcomes import newcombe_interval

    lo, hi = newcombe_interval(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_history_and_open_list_estimate():
    from churnflow.serving.outcomes import estimate_card, outcome_history

    sims = [simulate_list(seed, n=800, list_size=300) for seed in (7, 8)]
    cards = [card_of(sim) for sim in sims]
    cards[1]["as_of"] = "2026-02-23"
    history = outcome_history(cards)
    assert list(history["as_of"].dt.strftime("%Y-%m-%d")) == ["2026-02-23", "2026-03-02"]
    assert history.loc[1, "roc_auc"] == cards[0]["model_quality"]["roc_auc"]
    assert history["verdict"].notna().all()
    assert outcome_history([]).empty
    open_card = estimate_card(sims[0].scores)
    assert open_card["horizon_closed"] is False
    assert open_card["estimate_before_horizon"] == cards[0]["estimate_before_horizon"]
