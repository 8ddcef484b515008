"""The demo-data generator: determinism, schema, time consistency and the simulated effects."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from churnflow.features.demo import DemoData, generate_demo_data, write_demo_data

N = 5000
END = pd.Timestamp("2026-10-31")


@pytest.fixture(scope="module")
def data() -> DemoData:
    return generate_demo_data(N, seed=42, end_date="2026-10-31")


def _frames(d: DemoData) -> dict[str, pd.DataFrame]:
    return {
        "customers": d.customers,
        "events": d.events,
        "contacts": d.contacts,
        "assignments": d.assignments,
        "truth": d.truth,
    }


def test_same_seed_gives_identical_frames_and_other_seed_differs(data: DemoData) -> None:
    again = generate_demo_data(N, seed=42, end_date="2026-10-31")
    for name, frame in _frames(data).items():
        pdt.assert_frame_equal(frame, _frames(again)[name], obj=name)
    other = generate_demo_data(N, seed=43, end_date="2026-10-31")
    assert not other.customers["signup_time"].equals(data.customers["signup_time"])
    assert not other.customers["email"].equals(data.customers["email"])
    assert len(other.events) != len(data.events) or not other.events.equals(data.events)


def test_schema_and_dtypes(data: DemoData) -> None:
    c, e, k = data.customers, data.events, data.contacts
    assert list(c.columns[:3]) == ["customer_id", "signup_time", "churn_time"]
    assert c["customer_id"].dtype == np.int64
    assert c["customer_id"].tolist() == list(range(1, N + 1))
    assert c["signup_time"].dtype == "datetime64[ns]"
    assert c["churn_time"].dtype == "datetime64[ns]"
    assert c["signup_time"].notna().all()
    assert c["monthly_fee"].dtype == np.float64 and (c["monthly_fee"] > 0).all()
    for col in ["plan", "channel", "region", "credit_limit", "notes_id", "name", "email", "phone", "address"]:
        assert pd.api.types.is_string_dtype(c[col]), col
    assert set(c["plan"]) == {"basic", "plus", "premium"}
    assert set(c["channel"]) == {"web", "store", "partner", "referral"}
    assert 5 <= c["region"].nunique() <= 6
    # identifier-like text column: almost one value per customer
    assert c["notes_id"].nunique() > 0.99 * N
    # fake PII is filled in and looks like PII
    for col in ["name", "email", "phone", "address"]:
        assert (c[col].str.len() > 5).all(), col
    assert c["email"].str.fullmatch(r"[a-z]+\.[a-z]+\d*@[a-z.]+").all()
    assert c["phone"].str.contains("555-").all()

    assert list(e.columns) == ["customer_id", "event_time", "amount", "event_type"]
    assert e["customer_id"].dtype == np.int64
    assert e["event_time"].dtype == "datetime64[ns]"
    assert e["amount"].dtype == np.float64
    assert (e["amount"] >= 0).all()
    np.testing.assert_allclose(e["amount"], e["amount"].round(2), rtol=0, atol=1e-9)
    assert set(e["event_type"]) == {"purchase", "login", "support_ticket"}
    assert e["event_type"].value_counts(normalize=True)["purchase"] > 0.5
    assert (e.loc[e["event_type"] == "purchase", "amount"] > 0).all()
    # sorted by (customer_id, event_time), with real times of day
    key = e["customer_id"].to_numpy() * 10**12 + (e["event_time"].astype("int64") // 10**9).to_numpy()
    assert (np.diff(key) >= 0).all()
    assert (e["event_time"].dt.hour.nunique() == 24) and (e["event_time"].dt.minute.nunique() > 50)
    assert 15 < len(e) / N < 25  # about 20 events per customer

    assert list(k.columns) == ["customer_id", "contact_time", "campaign", "outcome"]
    assert k["customer_id"].dtype == np.int64
    assert k["contact_time"].dtype == "datetime64[ns]"
    assert set(k["campaign"]) == {"winback_10pct", "loyalty_points", "service_call"}
    assert set(k["outcome"]) == {"accepted", "declined", "no_response"}


def test_credit_limit_is_messy_text_that_parses(data: DemoData) -> None:
    raw = data.customers["credit_limit"]
    assert (raw == "").mean() > 0.02  # some blanks
    assert raw.str.contains(",", regex=False).mean() > 0.5  # thousands separators
    parsed = pd.to_numeric(raw.str.replace(",", "", regex=False).replace("", np.nan))
    assert parsed.notna().sum() == (raw != "").sum()
    assert (parsed.dropna() > 0).all()


def test_no_activity_outside_signup_and_churn(data: DemoData) -> None:
    c, e, k = data.customers, data.events, data.contacts
    for frame, col in [(e, "event_time"), (k, "contact_time")]:
        m = frame[["customer_id", col]].merge(
            c[["customer_id", "signup_time", "churn_time"]], on="customer_id", how="left"
        )
        assert m["signup_time"].notna().all(), "rows for unknown customers"
        assert (m[col] >= m["signup_time"]).all(), f"{col} before signup"
        churned = m["churn_time"].notna()
        assert (m.loc[churned, col] < m.loc[churned, "churn_time"]).all(), f"{col} after churn"
        assert (m[col] < END).all(), f"{col} after end_date"
    assert (c["signup_time"] < END).all()
    assert (c["churn_time"].dropna() > c.loc[c["churn_time"].notna(), "signup_time"]).all()
    assert (c["churn_time"].dropna() < END).all()


def test_cancellations_silent_lapses_and_active_customers(data: DemoData) -> None:
    c, e, t = data.customers, data.events, data.truth
    kinds = t["kind"].value_counts(normalize=True)
    assert kinds["active"] > 0.5  # many customers are still active at end_date
    assert kinds["cancelled"] > 0.05 and kinds["lapsed"] > 0.05
    cancelled = t["kind"] == "cancelled"
    assert c["churn_time"].notna().to_numpy().tolist() == cancelled.tolist()
    pdt.assert_series_equal(
        c.loc[cancelled, "churn_time"], t.loc[cancelled, "end_time"], check_names=False
    )
    # silent lapses have no churn_time, but their activity stops at the lapse
    lapsed = t.loc[t["kind"] == "lapsed", ["customer_id", "end_time"]]
    m = e.merge(lapsed, on="customer_id")
    assert len(m) > 0 and (m["event_time"] < m["end_time"]).all()


def test_acquisition_grows_and_activity_is_seasonal(data: DemoData) -> None:
    signup_year = (data.customers["signup_time"] - (END - pd.Timedelta(days=1095))).dt.days // 365
    per_year = signup_year.value_counts().sort_index()
    assert per_year[2] > 1.5 * per_year[0]

    t = data.events.loc[data.events["event_type"] == "purchase", "event_time"]
    holiday = t.between("2025-11-01", "2025-12-31 23:59:59").sum()
    before = t.between("2025-09-01", "2025-10-31 23:59:59").sum()
    assert holiday > 1.25 * before


def test_purchase_rates_and_spend_are_heterogeneous(data: DemoData) -> None:
    e, c, t = data.events, data.customers, data.truth
    p = e[e["event_type"] == "purchase"]
    # one plan, one early cohort, still active: same exposure, so Poisson would give var ~ mean
    first_half_year = c["signup_time"] < END - pd.Timedelta(days=1095 - 182)
    who = c.loc[first_half_year & (c["plan"] == "basic") & (t["kind"] == "active"), "customer_id"]
    assert len(who) > 80
    counts = p.groupby("customer_id").size().reindex(who, fill_value=0)
    assert counts.var() > 5 * counts.mean()  # overdispersed: gamma rates, not one Poisson
    regular = counts[counts >= 10].index
    spend = p[p["customer_id"].isin(regular)].groupby("customer_id")["amount"].mean()
    assert spend.quantile(0.9) > 2.5 * spend.quantile(0.1)  # lognormal per-customer spend


def test_offers_are_randomised_and_lower_churn(data: DemoData) -> None:
    a, t, k = data.assignments, data.truth, data.contacts
    # every contact is a treated assignment, and treatment is a coin flip among the eligible
    treated = a[a["treated"]]
    assert len(k) == len(treated)
    contacted = set(zip(k["customer_id"], k["contact_time"].dt.normalize(), strict=True))
    assert contacted == set(zip(treated["customer_id"], treated["assign_time"], strict=True))
    assert 0.3 < a["treated"].mean() < 0.5
    risk = t.set_index("customer_id")["hazard_per_year"].reindex(a["customer_id"]).to_numpy()
    by_arm = pd.Series(risk).groupby(a["treated"].to_numpy()).mean()
    assert abs(by_arm[True] / by_arm[False] - 1) < 0.1  # comparable arms

    # churn (cancel or lapse) within the 90 days after the randomisation
    end = t.set_index("customer_id")["end_time"].reindex(a["customer_id"]).to_numpy()
    start = a["assign_time"].to_numpy()
    churned = (end >= start) & (end < start + np.timedelta64(90, "D"))
    rate = pd.Series(churned).groupby(a["treated"].to_numpy()).mean()
    assert rate[False] > 0.05
    assert rate[True] < 0.85 * rate[False], rate.to_dict()


def _per_day_rates(
    events: pd.DataFrame, who: pd.DataFrame, last_days: int, gap_days: int
) -> tuple[float, float]:
    """Mean events/day in the last ``last_days`` before ``end`` vs before ``end - gap_days``."""
    m = events.merge(who, on="customer_id")
    last = m["event_time"] >= m["end"] - pd.Timedelta(days=last_days)
    early = m["event_time"] < m["end"] - pd.Timedelta(days=gap_days)
    n_last = last.groupby(m["customer_id"]).sum().reindex(who["customer_id"], fill_value=0)
    n_early = early.groupby(m["customer_id"]).sum().reindex(who["customer_id"], fill_value=0)
    early_days = (who["end"] - pd.Timedelta(days=gap_days) - who["signup_time"]).dt.days
    return float((n_last / last_days).mean()), float((n_early.to_numpy() / early_days.to_numpy()).mean())


def test_activity_decays_before_churn(data: DemoData) -> None:
    c = data.customers
    who = c.loc[c["churn_time"].notna(), ["customer_id", "signup_time", "churn_time"]]
    who = who.rename(columns={"churn_time": "end"})
    who = who[who["end"] - who["signup_time"] > pd.Timedelta(days=240)]
    assert len(who) > 100
    purchases = data.events[data.events["event_type"] == "purchase"]
    last, before = _per_day_rates(purchases, who, last_days=60, gap_days=120)
    assert last < 0.7 * before, (last, before)


def test_support_tickets_rise_before_churn(data: DemoData) -> None:
    t, c = data.truth, data.customers
    who = t.loc[t["end_time"].notna(), ["customer_id", "end_time"]].rename(columns={"end_time": "end"})
    who = who.merge(c[["customer_id", "signup_time"]], on="customer_id")
    who = who[who["end"] - who["signup_time"] > pd.Timedelta(days=240)]
    tickets = data.events[data.events["event_type"] == "support_ticket"]
    last, before = _per_day_rates(tickets, who, last_days=60, gap_days=120)
    assert last > 1.5 * before, (last, before)


def test_write_demo_data_round_trips(tmp_path, data: DemoData) -> None:
    small = generate_demo_data(300, seed=1)
    paths = write_demo_data(small, tmp_path / "demo")
    assert set(paths) == {"customers", "events", "contacts"}
    for name, path in paths.items():
        assert path == tmp_path / "demo" / f"{name}.parquet"
        pdt.assert_frame_equal(pd.read_parquet(path), getattr(small, name), obj=name)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "contacts.parquet",
        "customers.parquet",
        "events.parquet",
    ]
    # overwriting in place works and leaves no temporary files behind
    write_demo_data(small, tmp_path / "demo")
    assert len(list((tmp_path / "demo").iterdir())) == 3


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_demo_data(0)
    with pytest.raises(ValueError):
        generate_demo_data(10, end_date="2026-10-31 12:00")


# Hashes of the frames produced by generate_demo_data before it was split into one function per
# job (commit 4d55f3d): the refactor, and any later one, must not change a single value or dtype.
PINNED = {
    (2000, 7, "2026-10-31"): {
        "customers": "cadffa306447969c9d337999fa56cf97f281cd26cb25a06a00de8dfa3d0dd9ed",
        "events": "75093b594d0a0de21303e19ff4ef1f86b2b79743e8976e7791df67f776b8ba8a",
        "contacts": "544dbe87c0494f6e89620c01acada74b8201729ed65bf9d26d6fe7a7ebbe542c",
        "assignments": "a72912f85e098ea4077878e15372b5b5c59d2dc80873af169e8e572e7294e999",
        "truth": "52b49d1e506790eee9e23c18931206f0ec90211cad248e59b4c6fc07d13d46b8",
    },
    (300, 1, "2024-02-29"): {
        "customers": "508a46af97fa74574e1ee3cacbc5eb5b148afca61b8f93c2bf5817e08fff0cc4",
        "events": "a507c36334557583d4a146ac0b497332873a1e2da365e8f9fafc255820680bc6",
        "contacts": "e07425c15240bd1bf04578dccfc8462ea0fc77b862e1b316e5bbeb2ccbeef971",
        "assignments": "795fc6fe41460c917c26491ca944de57acd1dd48ebec6cdc2c7f88478a037351",
        "truth": "e212b0f2ef9e848162cbca246c120a51c141a2d2784eb0d5e178c14f9f40783e",
    },
}


def _frame_hash(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("args", sorted(PINNED))
def test_frames_identical_to_the_pinned_generator(args: tuple[int, int, str]) -> None:
    data = generate_demo_data(*args)
    assert {name: _frame_hash(frame) for name, frame in _frames(data).items()} == PINNED[args]


def test_the_demo_team_calls_a_list_and_saves_a_known_share_of_its_churners(data: DemoData) -> None:
    from churnflow.features.demo import TEAM_SAVE_SHARE, simulate_retention_team, team_campaign

    t, horizon = pd.Timestamp("2026-05-01"), 90
    end = t + pd.Timedelta(days=horizon)
    ev = data.events
    before = ev["customer_id"].unique()[:1000]
    called = np.random.default_rng(1).choice(before, 400, replace=False)
    loop = simulate_retention_team(data.customers, ev, data.contacts, called, t, horizon, seed=3)
    again = simulate_retention_team(data.customers, ev, data.contacts, called, t, horizon, seed=3)
    pdt.assert_frame_equal(loop.events, again.events)

    calls = loop.contacts[loop.contacts["campaign"] == team_campaign(t)]
    assert sorted(calls["customer_id"]) == sorted(called) and calls["contact_time"].dt.normalize().eq(t).all()
    pdt.assert_frame_equal(loop.contacts[loop.contacts["campaign"] != team_campaign(t)].reset_index(drop=True),
                           data.contacts.reset_index(drop=True))
    old = ev.loc[ev["event_time"] < t].reset_index(drop=True)
    pdt.assert_frame_equal(loop.events.loc[loop.events["event_time"] < t].reset_index(drop=True), old)
    assert loop.events[["customer_id", "event_time"]].apply(tuple, axis=1).is_monotonic_increasing

    def churned(events: pd.DataFrame) -> np.ndarray:
        inside = events.loc[(events["event_time"] >= t) & (events["event_time"] < end), "customer_id"]
        return ~np.isin(called, inside.unique())

    was, now = churned(ev), churned(loop.events)
    assert not (now & ~was).any() and (was & ~now).sum() == loop.n_saved  # nobody made to churn
    assert abs(loop.n_saved / was.sum() - TEAM_SAVE_SHARE) < 0.12
    assert loop.true_effect == pytest.approx(now.mean() - was.mean())
