"""Seeded, vectorised generator of a realistic demo customer base.

``generate_demo_data(n_customers, seed, end_date)`` returns a :class:`DemoData` with the three
canonical tables (``customers``, ``events``, ``contacts``) plus two ground-truth frames that
real data never has (``assignments``: the randomisation log of retention offers; ``truth``:
how and when each customer really left). Everything is drawn from one
``numpy.random.default_rng(seed)`` in a fixed order, so the same ``(n, seed, end_date)``
gives identical frames. No per-customer Python loops: 1M customers (~20M events) take
seconds.

The simulated world (time ``t`` in days since ``end_date - 3 years``):

* **Acquisition**: signups over the 3 years before ``end_date`` with exponential growth
  (about 2.2x more signups per day at the end than at the start); ids 1..N in signup order.
* **Attributes**: ``plan`` (basic/plus/premium), ``channel`` (web/store/partner/referral),
  ``region`` (6 regions), ``monthly_fee`` (plan price with regional/promo variation),
  ``credit_limit`` (numbers stored as text with thousands separators, some blank),
  ``notes_id`` (unique-ish identifier string that feature typing should drop), and fake PII
  (``name``, ``email`` on reserved example domains, ``phone`` with the fictional 555 exchange,
  ``address``).
* **Activity**: per-customer purchase rates are gamma distributed, mean spend lognormal.
  Purchases and logins follow an inhomogeneous Poisson process: seasonal (busy November and
  December) and decaying linearly to 10% over the last 60-120 days (per customer) before the
  customer leaves. Support tickets rise up to 5x over the same pre-churn window.
* **Churn**: a constant per-customer hazard (depends on plan, channel, region, fee, credit
  limit, activity rate and a gamma frailty). When it fires the customer either cancels
  (``churn_time`` set; share depends on the plan) or lapses silently (no ``churn_time``,
  activity just stops). The process runs past ``end_date`` so customers about to leave show
  the pre-churn decay at the end of the data; many customers are still active at ``end_date``.
* **Retention offers**: every 30 days during the last two years, at-risk customers (baseline
  hazard in the top 40%, tenure >= 60 days, still active, no offer in the last 90 days) are
  each offered with probability 0.4, independently of everything else. An offer multiplies the
  churn hazard by :data:`OFFER_EFFECT` of its campaign for the next 90 days. ``outcome`` is
  recorded but independent of the effect (the offer is what works, intention-to-treat).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from churnflow.features.io import atomic_write

__all__ = ["OFFER_EFFECT", "TEAM_SAVE_SHARE", "DemoData", "TeamLoop", "generate_demo_data", "simulate_retention_team",
           "team_campaign", "write_demo_data"]

# ---- knobs of the simulated world --------------------------------------------------------
HISTORY_DAYS = 3 * 365
SIGNUP_GROWTH = np.log(2.2) / HISTORY_DAYS  # signups/day grow 2.2x over the history
SIM_BEYOND_DAYS = 365  # churn is simulated this far past end_date (pre-churn decay at the end)

PLANS = ("basic", "plus", "premium")
PLAN_P = (0.55, 0.30, 0.15)
PLAN_FEE = (9.99, 19.99, 39.99)
PLAN_HAZARD = (0.30, 0.0, -0.45)  # log hazard
PLAN_RATE = (0.85, 1.0, 1.35)  # purchase-rate multiplier
PLAN_SPEND = (0.0, 0.2, 0.5)  # log mean-spend offset
MEAN_SPEND = 35.0  # median of the per-customer mean spend (lognormal)
SPEND_SIGMA = 0.6  # spread of the per-customer mean spend (log scale)
AMOUNT_SIGMA = 0.45  # spread of single purchase amounts around the customer mean (log scale)
PLAN_CANCEL_SHARE = (0.35, 0.50, 0.65)  # share of churners who cancel (rest lapse silently)

CHANNELS = ("web", "store", "partner", "referral")
CHANNEL_P = (0.45, 0.25, 0.18, 0.12)
CHANNEL_HAZARD = (0.0, -0.15, 0.40, -0.30)

REGIONS = ("north", "south", "east", "west", "central", "coastal")
REGION_P = (0.22, 0.20, 0.18, 0.17, 0.13, 0.10)
REGION_HAZARD = (0.0, 0.10, -0.05, 0.05, 0.15, -0.10)

BASE_HAZARD_PER_YEAR = 0.33
PURCHASES_PER_DAY = 0.0357  # mean of the gamma purchase rate (tuned for ~20 events/customer)
PURCHASE_RATE_SHAPE = 1.3
LOGINS_PER_PURCHASE = 0.45
TICKETS_PER_DAY = 0.0019
TICKET_PRECHURN_FACTOR = 5.0  # tickets/day multiply up to this just before leaving
DECAY_FLOOR = 0.10  # activity multiplier at the moment of leaving
DECAY_DAYS = (60.0, 120.0)  # pre-churn decay window, uniform per customer
# Seasonal multiplier by calendar month (Jan..Dec) of the purchase intensity.
SEASON = np.array([0.85, 0.82, 0.95, 0.95, 1.0, 0.95, 0.9, 0.9, 1.0, 1.05, 1.45, 1.7])
LOGIN_SEASON = SEASON**0.3

CAMPAIGNS = ("winback_10pct", "loyalty_points", "service_call")
CAMPAIGN_P = (0.45, 0.30, 0.25)
OFFER_EFFECT = {"winback_10pct": 0.55, "loyalty_points": 0.70, "service_call": 0.60}
"""Churn-hazard multiplier for the 90 days after an offer of each campaign."""
OUTCOMES = ("accepted", "declined", "no_response")
OUTCOME_P = (0.25, 0.15, 0.60)
CAMPAIGN_EVERY_DAYS = 30
N_CAMPAIGNS = 24  # the last two years
OFFER_WINDOW_DAYS = 90  # effect length and contact cooldown (a multiple of CAMPAIGN_EVERY_DAYS)
OFFER_PROBABILITY = 0.4
AT_RISK_QUANTILE = 0.6
MIN_TENURE_FOR_OFFER = 60

# Hour-of-day weights for activity (evening peak).
_HOUR_W = np.array(
    [0.5, 0.3, 0.2, 0.2, 0.2, 0.4, 1, 2, 3, 4, 4.5, 5, 5.5, 5, 4.5, 4.5, 5, 5.5, 6, 6.5, 6, 5, 3, 1.5]
)
_HOUR_CDF = np.cumsum(_HOUR_W) / _HOUR_W.sum()

_FIRST = np.array(
    [
        "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
        "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
        "Sarah", "Charles", "Karen", "Daniel", "Lisa", "Matthew", "Nancy", "Anthony", "Betty",
        "Mark", "Sandra", "Paul", "Ashley", "Steven", "Emily", "Andrew", "Donna", "Joshua",
        "Michelle", "Kevin", "Carol", "Brian", "Amanda", "George", "Melissa", "Omar", "Aisha",
        "Wei", "Mei", "Ravi", "Priya", "Carlos", "Sofia", "Luca", "Giulia", "Hans", "Ingrid",
        "Kenji", "Yuki", "Ahmed", "Fatima",
    ]
)
_LAST = np.array(
    [
        "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
        "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
        "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White",
        "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young",
        "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green",
        "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter",
        "Roberts", "Chen", "Patel", "Kim", "Muller", "Rossi", "Novak", "Silva", "Tanaka",
        "Khan", "Okafor",
    ]
)
_DOMAINS = np.array(["example.com", "example.net", "example.org", "mail.example.com"])
_STREETS = np.array(
    [
        "Oak", "Maple", "Pine", "Cedar", "Elm", "Birch", "Willow", "Lake", "Hill", "River",
        "Park", "Main", "Church", "Station", "Mill", "Meadow", "Forest", "Spring", "Sunset",
        "Highland", "Valley", "Bridge", "Market", "Garden",
    ]
)
_SUFFIXES = np.array(["Street", "Avenue", "Road", "Lane", "Drive", "Way", "Close", "Court"])
# Three towns and one phone area code per region, in REGIONS order.
_TOWNS = np.array(
    [
        "Northbridge", "Frostvale", "Kingsmere", "Southport", "Suncrest", "Redwater",
        "Eastleigh", "Morningside", "Ashford", "Westfield", "Harrowgate", "Pinecliff",
        "Midland", "Centreville", "Hearthton", "Seaview", "Baymouth", "Saltmarsh",
    ]
)
_AREA_CODES = np.array(["201", "305", "617", "415", "312", "808"])
_ID_ALPHABET = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)

_SECONDS_PER_DAY = 86_400
_KEY_TIME = 1 << 27  # > seconds in HISTORY_DAYS; event sort key = (id * _KEY_TIME + sec) * 4 + type
EVENT_TYPES = ("purchase", "login", "support_ticket")


@dataclass(frozen=True, eq=False)
class DemoData:
    """The demo tables (canonical names) plus ground truth for checking methods.

    ``customers``, ``events`` and ``contacts`` are what a real company would have.
    ``assignments`` logs every offer randomisation (``customer_id``, ``assign_time``,
    ``treated``): one row per eligible customer per campaign, treated or not.
    ``truth`` has per customer ``kind`` ("cancelled", "lapsed" or "active" at end_date),
    ``end_time`` (when activity stopped; NaT if active at end_date), ``hazard_per_year`` (the
    baseline churn hazard) and ``decay_days`` (length of the pre-churn decay).
    """

    customers: pd.DataFrame
    events: pd.DataFrame
    contacts: pd.DataFrame
    assignments: pd.DataFrame
    truth: pd.DataFrame


# ---- small vectorised helpers --------------------------------------------------------------
def _str_col(labels: np.ndarray | tuple[str, ...], codes: np.ndarray) -> pd.Series:
    """A default-``str`` Series of ``labels[codes]`` built without a Python object array."""
    dict_arr = pa.DictionaryArray.from_arrays(
        pa.array(np.asarray(codes, dtype=np.int32)), pa.array(list(labels), type=pa.large_string())
    )
    return pd.Series(dict_arr.cast(pa.large_string()), dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def _num_str(values: np.ndarray) -> pd.Series:
    return pd.Series(values).astype("str")


def _time_of_day_seconds(rng: np.random.Generator, size: int) -> np.ndarray:
    hour = np.searchsorted(_HOUR_CDF, rng.random(size), side="right")
    return np.minimum(hour, 23) * 3600 + rng.integers(0, 3600, size)


def _to_datetime(epoch_ns: int, seconds: np.ndarray) -> np.ndarray:
    return (epoch_ns + seconds.astype(np.int64) * 1_000_000_000).view("M8[ns]")


def _month_table(epoch: pd.Timestamp, days: int) -> np.ndarray:
    """Calendar month index (0 = January) of each whole day since ``epoch``."""
    d = np.datetime64(epoch.date(), "D") + np.arange(days + 1)
    return (d.astype("M8[M]").astype(np.int64) % 12).astype(np.int8)


def _poisson_stream(
    rng: np.random.Generator, max_rate: np.ndarray, start: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate events of a homogeneous Poisson process at ``max_rate`` per customer on
    ``[start, stop)`` (days); the caller thins them to the wanted intensity."""
    dur = np.maximum(stop - start, 0.0)
    counts = rng.poisson(max_rate * dur)
    idx = np.repeat(np.arange(max_rate.size, dtype=np.int32), counts)
    t = start[idx] + rng.random(idx.size) * dur[idx]
    return idx, t


# ---- the generator: one function per job, drawing from one rng in a fixed order -------------
@dataclass(frozen=True)
class _Attributes:
    """Static attributes per customer (index = id - 1); the z-scores also drive the hazard."""

    plan: np.ndarray
    channel: np.ndarray
    region: np.ndarray
    fee_z: np.ndarray
    monthly_fee: np.ndarray
    credit_z: np.ndarray
    credit: np.ndarray
    credit_blank: np.ndarray


@dataclass(frozen=True)
class _Behaviour:
    """Activity rates per day, mean spend, pre-churn decay length and churn hazard per day."""

    purchase_rate: np.ndarray
    login_rate: np.ndarray
    ticket_rate: np.ndarray
    mean_spend: np.ndarray
    decay_days: np.ndarray
    hazard: np.ndarray
    at_risk: np.ndarray


@dataclass(frozen=True)
class _Churn:
    """When each customer leaves and how, plus the offer log of the campaigns."""

    leave: np.ndarray  # day the customer stops (cancel or lapse); inf = beyond the simulation
    cancels: np.ndarray  # leaves by cancelling (else lapses silently)
    churn_s: np.ndarray  # leaving time in seconds since the epoch (0 when still active)
    stop_s: np.ndarray  # exclusive end of activity in seconds
    assigned: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]  # ids, day, treated
    offered: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]  # ids, day, campaign

    @property
    def left(self) -> np.ndarray:
        return self.leave < HISTORY_DAYS


def generate_demo_data(n_customers: int, seed: int = 42, end_date: str = "2026-10-31") -> DemoData:
    """Generate ``n_customers`` customers with events and retention contacts up to ``end_date``.

    ``end_date`` is an ISO date; no row is at or after its midnight. Deterministic in
    ``(n_customers, seed, end_date)``: every step draws from one generator in a fixed order
    (pinned by a hash test), so reordering the steps below changes the data.
    """
    n = int(n_customers)
    if n < 1:
        raise ValueError("n_customers must be at least 1")
    end = pd.Timestamp(end_date)
    if end != end.normalize() or end.tz is not None:
        raise ValueError(f"end_date must be a plain date such as 2026-10-31, got {end_date!r}")
    rng = np.random.default_rng(seed)
    epoch = end - pd.Timedelta(days=HISTORY_DAYS)
    epoch_ns = int(epoch.as_unit("ns").value)
    month_of_day = _month_table(epoch, HISTORY_DAYS + SIM_BEYOND_DAYS + 1)

    signup_s = _acquisition(rng, n)
    attributes = _attributes(rng, n)
    behaviour = _behaviour(rng, attributes)
    churn = _churn_with_offers(rng, behaviour, signup_s / _SECONDS_PER_DAY, attributes.plan)
    events = _events(rng, signup_s, behaviour, churn, month_of_day, epoch_ns)
    contacts, assignments = _contacts(rng, churn, epoch_ns)
    customers, truth = _customers(rng, signup_s, attributes, behaviour, churn, epoch_ns)
    return DemoData(customers, events, contacts, assignments, truth)


def _acquisition(rng: np.random.Generator, n: int) -> np.ndarray:
    """Signup seconds since the epoch: exponential growth, realistic time of day, sorted (ids)."""
    u = rng.random(n)
    signup_day = np.floor(np.log1p(u * np.expm1(SIGNUP_GROWTH * HISTORY_DAYS)) / SIGNUP_GROWTH)
    return np.sort(
        np.minimum(signup_day, HISTORY_DAYS - 1).astype(np.int64) * _SECONDS_PER_DAY
        + _time_of_day_seconds(rng, n)
    )


def _attributes(rng: np.random.Generator, n: int) -> _Attributes:
    plan = rng.choice(len(PLANS), size=n, p=PLAN_P)
    channel = rng.choice(len(CHANNELS), size=n, p=CHANNEL_P)
    region = rng.choice(len(REGIONS), size=n, p=REGION_P)
    fee_z = rng.standard_normal(n)
    monthly_fee = np.round(np.asarray(PLAN_FEE)[plan] * np.exp(0.12 * fee_z), 0) - 0.01
    credit_z = rng.standard_normal(n)
    credit = np.clip(np.round(2500 * np.exp(0.6 * credit_z) / 50) * 50, 100, 99_950).astype(np.int64)
    credit_blank = rng.random(n) < 0.06
    return _Attributes(plan, channel, region, fee_z, np.maximum(monthly_fee, 4.99), credit_z, credit, credit_blank)


def _behaviour(rng: np.random.Generator, a: _Attributes) -> _Behaviour:
    """Gamma activity rates, lognormal spend, and a hazard from attributes, activity and frailty."""
    n = a.plan.size
    purchase_rate = (
        rng.gamma(PURCHASE_RATE_SHAPE, PURCHASES_PER_DAY / PURCHASE_RATE_SHAPE, n)
        * np.asarray(PLAN_RATE)[a.plan]
    )
    login_rate = purchase_rate * rng.gamma(2.0, LOGINS_PER_PURCHASE / 2.0, n)
    ticket_rate = rng.gamma(2.0, TICKETS_PER_DAY / 2.0, n)
    mean_spend = np.exp(
        np.log(MEAN_SPEND) + np.asarray(PLAN_SPEND)[a.plan] + SPEND_SIGMA * rng.standard_normal(n)
    )
    decay_days = rng.uniform(DECAY_DAYS[0], DECAY_DAYS[1], n)
    log_h = (
        np.asarray(PLAN_HAZARD)[a.plan]
        + np.asarray(CHANNEL_HAZARD)[a.channel]
        + np.asarray(REGION_HAZARD)[a.region]
        + 0.25 * a.fee_z
        - 0.15 * a.credit_z
        - 0.45 * np.log(purchase_rate / PURCHASES_PER_DAY)
    )
    frailty = rng.gamma(2.0, 0.5, n)
    hazard = BASE_HAZARD_PER_YEAR / 365.0 * np.exp(log_h - 0.25) * frailty  # per day
    at_risk = hazard >= np.quantile(hazard, AT_RISK_QUANTILE)
    return _Behaviour(purchase_rate, login_rate, ticket_rate, mean_spend, decay_days, hazard, at_risk)


def _churn_with_offers(
    rng: np.random.Generator, b: _Behaviour, signup: np.ndarray, plan: np.ndarray
) -> _Churn:
    """Walk the cumulative hazard over campaign segments; randomise offers at each campaign."""
    n, L = signup.size, HISTORY_DAYS
    campaign_days = L - CAMPAIGN_EVERY_DAYS * np.arange(N_CAMPAIGNS, 0, -1)
    bounds = np.unique(
        np.concatenate(
            [[0.0, L, L + SIM_BEYOND_DAYS], campaign_days, campaign_days + OFFER_WINDOW_DAYS]
        ).astype(np.float64)
    )
    budget = rng.exponential(1.0, n)  # churn when the cumulative hazard reaches this
    cum_h = np.zeros(n)
    leave = np.full(n, np.inf)
    treat_until = np.full(n, -np.inf)
    treat_mult = np.ones(n)
    last_offer = np.full(n, -np.inf)
    effects = np.array([OFFER_EFFECT[c] for c in CAMPAIGNS])
    campaign_set = set(campaign_days.tolist())
    assigned: tuple[list[np.ndarray], ...] = ([], [], [])
    offered: tuple[list[np.ndarray], ...] = ([], [], [])
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if start in campaign_set:
            eligible = np.flatnonzero(
                b.at_risk
                & (leave > start)
                & (signup <= start - MIN_TENURE_FOR_OFFER)
                & (last_offer <= start - OFFER_WINDOW_DAYS)
            )
            treated = rng.random(eligible.size) < OFFER_PROBABILITY
            who = eligible[treated]
            campaign = rng.choice(len(CAMPAIGNS), size=who.size, p=CAMPAIGN_P)
            treat_until[who] = start + OFFER_WINDOW_DAYS
            treat_mult[who] = effects[campaign]
            last_offer[who] = start
            for log, values in zip(assigned, (eligible, np.full(eligible.size, start), treated), strict=True):
                log.append(values)
            for log, values in zip(offered, (who, np.full(who.size, start), campaign), strict=True):
                log.append(values)
        rate = b.hazard * np.where(treat_until > start, treat_mult, 1.0)
        lo = np.maximum(start, signup)
        d_h = rate * np.maximum(end - lo, 0.0)
        hit = np.isinf(leave) & (cum_h + d_h >= budget)
        leave[hit] = lo[hit] + (budget[hit] - cum_h[hit]) / rate[hit]
        cum_h += d_h
    cancels = rng.random(n) < np.asarray(PLAN_CANCEL_SHARE)[plan]
    left = leave < L
    churn_s = np.ceil(np.where(left, leave, 0.0) * _SECONDS_PER_DAY).astype(np.int64)
    stop_s = np.where(left, churn_s, L * _SECONDS_PER_DAY)
    return _Churn(leave, cancels, churn_s, stop_s, assigned, offered)


def _event_keys(
    rng: np.random.Generator, signup_s: np.ndarray, b: _Behaviour, churn: _Churn, month_of_day: np.ndarray
) -> np.ndarray:
    """Thinned Poisson streams of purchases, logins and tickets as sortable int64 keys."""
    signup = signup_s / _SECONDS_PER_DAY
    stop = np.minimum(churn.leave, HISTORY_DAYS)

    def closeness(idx: np.ndarray, t: np.ndarray) -> np.ndarray:
        """0 far from leaving, rising linearly to 1 at the moment of leaving."""
        return np.clip(1.0 - (churn.leave[idx] - t) / b.decay_days[idx], 0.0, 1.0)

    keys = []
    for etype, (base, season) in enumerate(
        [(b.purchase_rate, SEASON), (b.login_rate, LOGIN_SEASON), (b.ticket_rate, None)]
    ):
        if season is None:
            top = TICKET_PRECHURN_FACTOR
            idx, t = _poisson_stream(rng, base * top, signup, stop)
            accept = (1.0 + (top - 1.0) * closeness(idx, t)) / top
        else:
            top = float(season.max())
            idx, t = _poisson_stream(rng, base * top, signup, stop)
            accept = season[month_of_day[t.astype(np.int64)]] / top
            accept *= 1.0 - (1.0 - DECAY_FLOOR) * closeness(idx, t)
        keep = rng.random(idx.size) < accept
        idx, t = idx[keep], t[keep]
        del accept, keep
        # realistic time of day on the same date, when it stays inside the active interval
        sec = np.floor(t).astype(np.int64) * _SECONDS_PER_DAY + _time_of_day_seconds(rng, idx.size)
        raw = np.floor(t * _SECONDS_PER_DAY).astype(np.int64)
        inside = (sec >= signup_s[idx]) & (sec < churn.stop_s[idx])
        sec = np.where(inside, sec, raw)
        sec = np.clip(sec, signup_s[idx], churn.stop_s[idx] - 1)
        keys.append((idx.astype(np.int64) * _KEY_TIME + sec) * 4 + etype)
        del idx, t, sec, raw, inside
    return np.concatenate(keys)


def _events(
    rng: np.random.Generator, signup_s: np.ndarray, b: _Behaviour, churn: _Churn,
    month_of_day: np.ndarray, epoch_ns: int,
) -> pd.DataFrame:
    """The events table sorted by (customer, time), with purchase amounts (holiday uplift)."""
    key = _event_keys(rng, signup_s, b, churn, month_of_day)
    key.sort()
    ev_type = (key & 3).astype(np.int8)
    key >>= 2
    ev_idx = key // _KEY_TIME
    ev_sec = key - ev_idx * _KEY_TIME
    del key
    is_purchase = ev_type == 0
    amount = np.zeros(ev_type.size)
    p_idx = ev_idx[is_purchase]
    p_month = month_of_day[ev_sec[is_purchase] // _SECONDS_PER_DAY]
    holiday = np.where((p_month == 10) | (p_month == 11), 1.15, 1.0)
    noise = np.exp(AMOUNT_SIGMA * rng.standard_normal(int(is_purchase.sum())) - AMOUNT_SIGMA**2 / 2)
    amount[is_purchase] = np.maximum(np.round(b.mean_spend[p_idx] * holiday * noise, 2), 0.5)
    del p_idx, p_month, holiday, is_purchase, noise
    return pd.DataFrame(
        {
            "customer_id": ev_idx + 1,
            "event_time": _to_datetime(epoch_ns, ev_sec),
            "amount": amount,
            "event_type": _str_col(EVENT_TYPES, ev_type),
        }
    )


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _contacts(rng: np.random.Generator, churn: _Churn, epoch_ns: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contacts of the treated (business hours, never after leaving) and the randomisation log."""
    c_who, c_at, c_camp = (_concat(p, t) for p, t in zip(churn.offered, (np.int64, float, np.int64), strict=True))
    c_sec = c_at.astype(np.int64) * _SECONDS_PER_DAY + rng.integers(9 * 3600, 17 * 3600, c_who.size)
    c_sec = np.where(c_sec < churn.stop_s[c_who], c_sec, c_at.astype(np.int64) * _SECONDS_PER_DAY)
    outcome = rng.choice(len(OUTCOMES), size=c_who.size, p=OUTCOME_P)
    order = np.lexsort((c_who, c_sec))
    contacts = pd.DataFrame(
        {
            "customer_id": c_who[order].astype(np.int64) + 1,
            "contact_time": _to_datetime(epoch_ns, c_sec[order]),
            "campaign": _str_col(CAMPAIGNS, c_camp[order]),
            "outcome": _str_col(OUTCOMES, outcome[order]),
        }
    )
    a_who, a_at, a_treated = (_concat(p, t) for p, t in zip(churn.assigned, (np.int64, float, bool), strict=True))
    assignments = pd.DataFrame(
        {
            "customer_id": a_who.astype(np.int64) + 1,
            "assign_time": _to_datetime(epoch_ns, a_at.astype(np.int64) * _SECONDS_PER_DAY),
            "treated": a_treated,
        }
    )
    return contacts, assignments


def _credit_text(credit: np.ndarray, blank: np.ndarray) -> pd.Series:
    """Credit limits as text with thousands separators ("12,350"), some blank."""
    thousands, rest = credit // 1000, credit % 1000
    text = pd.Series(
        np.where(thousands > 0, _num_str(thousands) + "," + _num_str(rest).str.zfill(3), _num_str(rest)),
        dtype="str",
    )
    text[blank] = ""
    return text


def _fake_pii(rng: np.random.Generator, region: np.ndarray) -> dict[str, pd.Series]:
    """Name, e-mail (reserved example domains), phone (fictional 555) and address per customer."""
    n = region.size
    first = _str_col(_FIRST, f_code := rng.integers(0, _FIRST.size, n))
    last = _str_col(_LAST, l_code := rng.integers(0, _LAST.size, n))
    suffix_num = rng.integers(1, 100, n)
    email_num = pd.Series(np.where(rng.random(n) < 0.6, _num_str(suffix_num), ""), dtype="str")
    email = (
        _str_col(np.char.lower(_FIRST), f_code) + "." + _str_col(np.char.lower(_LAST), l_code)
        + email_num + "@" + _str_col(_DOMAINS, rng.integers(0, _DOMAINS.size, n))
    )
    phone = "+1 (" + _str_col(_AREA_CODES, region) + ") 555-" + _num_str(rng.integers(0, 10_000, n)).str.zfill(4)
    address = (
        _num_str(rng.integers(1, 2500, n))
        + " " + _str_col(_STREETS, rng.integers(0, _STREETS.size, n))
        + " " + _str_col(_SUFFIXES, rng.integers(0, _SUFFIXES.size, n))
        + ", " + _str_col(_TOWNS, region * 3 + rng.integers(0, 3, n))
    )
    return {"name": first + " " + last, "email": email, "phone": phone, "address": address}


def _customers(
    rng: np.random.Generator, signup_s: np.ndarray, a: _Attributes, b: _Behaviour, churn: _Churn, epoch_ns: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The customers table (messy text, fake PII) and the ground truth of how each one left."""
    n = signup_s.size
    ids = np.arange(1, n + 1, dtype=np.int64)
    churn_time = _to_datetime(epoch_ns, churn.churn_s)
    churn_time[~(churn.left & churn.cancels)] = np.datetime64("NaT")
    notes_chars = _ID_ALPHABET[rng.integers(0, _ID_ALPHABET.size, (n, 10))]
    notes_id = "NT-" + pd.Series(notes_chars.view("S10").ravel()).str.decode("ascii").astype("str")
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_time": _to_datetime(epoch_ns, signup_s),
            "churn_time": churn_time,
            "plan": _str_col(PLANS, a.plan),
            "channel": _str_col(CHANNELS, a.channel),
            "region": _str_col(REGIONS, a.region),
            "monthly_fee": a.monthly_fee,
            "credit_limit": _credit_text(a.credit, a.credit_blank),
            "notes_id": notes_id,
            **_fake_pii(rng, a.region),
        }
    )
    end_time = _to_datetime(epoch_ns, churn.churn_s)
    end_time[~churn.left] = np.datetime64("NaT")
    truth = pd.DataFrame(
        {
            "customer_id": ids,
            "kind": _str_col(("cancelled", "lapsed", "active"), np.where(churn.left, np.where(churn.cancels, 0, 1), 2)),
            "end_time": end_time,
            "hazard_per_year": b.hazard * 365.0,
            "decay_days": b.decay_days,
        }
    )
    return customers, truth


def write_demo_data(data: DemoData, folder: Path) -> dict[str, Path]:
    """Write ``customers``, ``events`` and ``contacts`` as Parquet files in ``folder``.

    Each file is written to a temporary file in the same folder and renamed into place, so a
    reader never sees a half-written file. Returns ``{"customers": path, ...}``.
    """
    paths: dict[str, Path] = {}
    for name in ("customers", "events", "contacts"):
        frame: pd.DataFrame = getattr(data, name)
        paths[name] = atomic_write(Path(folder) / f"{name}.parquet", lambda p, f=frame: f.to_parquet(p, index=False))
    return paths


# ---- the retention team of the demo --------------------------------------------------------
TEAM_SAVE_SHARE = 0.4
"""The demo team's true effect: a contacted customer who would have churned in the list's horizon
stays with this probability (so the contacted group's churn rate falls by this share)."""


MARGIN_DAYS = 14
"""The last past list's horizon ends this long before the data do."""
N_PAST_LISTS = 3
"""Weekly past lists the demo publishes and works: enough for a history and the decay alarm."""


def past_list_dates(data_end: pd.Timestamp, horizon_days: int, n: int = N_PAST_LISTS) -> list[pd.Timestamp]:
    """``n`` weekly dates, oldest first, whose horizons have passed: the latest one's horizon
    ``[T, T + H)`` ends ``MARGIN_DAYS`` before the data end."""
    last = pd.Timestamp(data_end).normalize() + pd.Timedelta(days=1 - horizon_days - MARGIN_DAYS)
    return [last - pd.Timedelta(weeks=k) for k in range(n - 1, -1, -1)]


def team_campaign(as_of: pd.Timestamp) -> str:
    """The ``campaign`` of the contacts the demo team makes for the list of ``as_of``."""
    return f"churnflow list {pd.Timestamp(as_of).date().isoformat()}"


@dataclass(frozen=True, eq=False)
class TeamLoop:
    """The demo tables after the team worked one list, and the truth the report card should find."""

    customers: pd.DataFrame
    events: pd.DataFrame
    contacts: pd.DataFrame
    n_contacted: int
    n_saved: int
    true_effect: float
    """Change of the contacted customers' churn rate caused by the calls: ``-n_saved / n_contacted``."""


def simulate_retention_team(customers: pd.DataFrame, events: pd.DataFrame, contacts: pd.DataFrame,
                            contacted: pd.Series | np.ndarray, as_of: pd.Timestamp, horizon_days: int,
                            seed: int = 0, save_share: float = TEAM_SAVE_SHARE) -> TeamLoop:
    """The retention team works the list of ``as_of``: it calls ``contacted`` on that day, and each
    of them who would have churned in ``[as_of, as_of + H)`` stays with probability ``save_share``.

    A customer who stays buys again in the horizon (1 + Poisson(2) purchases at their usual
    amount, at random times in the window) and their cancellation in the window is undone; nothing
    before ``as_of`` changes, so the list of that date is unchanged. "Would have churned" is the
    inactivity label: no event in the window. Pure: returns new frames (canonical names).
    """
    t = pd.Timestamp(as_of).normalize()
    end = t + pd.Timedelta(days=horizon_days)
    rng = np.random.default_rng([int(seed), int(t.value // 86_400_000_000_000)])
    ids = np.unique(np.asarray(contacted))
    times = events["event_time"]
    active = pd.unique(events.loc[((times >= t) & (times < end)).to_numpy(), "customer_id"])
    would_churn = ids[~np.isin(ids, active)]
    saved = would_churn[rng.random(would_churn.size) < save_share]
    calls = pd.DataFrame({
        "customer_id": ids.astype(contacts["customer_id"].dtype),
        "contact_time": t + pd.to_timedelta(rng.integers(9 * 3600, 17 * 3600, ids.size), unit="s"),
        "campaign": pd.Series([team_campaign(t)] * ids.size, dtype=contacts["campaign"].dtype),
        "outcome": pd.Series(np.asarray(OUTCOMES)[rng.choice(len(OUTCOMES), ids.size, p=OUTCOME_P)],
                             dtype=contacts["outcome"].dtype),
    })
    n_buys = 1 + rng.poisson(2.0, saved.size)
    who = np.repeat(saved, n_buys)
    usual = events.loc[events["amount"] > 0].groupby("customer_id")["amount"].median()
    window_s = int((min(end, times.max().normalize() + pd.Timedelta(days=1)) - t).total_seconds())
    buys = pd.DataFrame({
        "customer_id": who.astype(events["customer_id"].dtype),
        "event_time": t + pd.to_timedelta(rng.integers(3600, max(window_s, 7200), who.size), unit="s"),
        "amount": usual.reindex(who).fillna(MEAN_SPEND).to_numpy(np.float64),
        "event_type": _str_col(EVENT_TYPES, np.zeros(who.size, np.int32)),
    })
    stays = customers["customer_id"].isin(saved) & (customers["churn_time"] >= t)
    return TeamLoop(
        customers=customers.assign(churn_time=customers["churn_time"].mask(stays)),
        events=pd.concat([events, buys], ignore_index=True).sort_values(["customer_id", "event_time"], kind="stable",
                                                                        ignore_index=True),
        contacts=pd.concat([contacts, calls], ignore_index=True).sort_values(["contact_time", "customer_id"],
                                                                            kind="stable", ignore_index=True),
        n_contacted=int(ids.size), n_saved=int(saved.size),
        true_effect=-saved.size / ids.size if ids.size else 0.0,
    )
