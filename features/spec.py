"""Every feature churnflow builds, declared once: name, role, group, unit, meaning, phrase, computation.

One ``FeatureSpec`` per feature (or per family: one per window, one per event type). Everything
else reads this list: ``features.build`` computes each feature with its ``compute`` function and
orders the table by it, ``features.dictionary`` takes meanings and phrases from it, and the
schema stores each feature's ``role`` (and window) so that segments, value at risk, baselines
and behavioural checks look features up by what they *mean* ("the recency feature", "spend over
the longest window") instead of rebuilding names. Adding a feature is one entry here; adding a
window is one number in ``features.windows_days``.

Patterns in ``name``, ``meaning`` and ``phrase``: ``<w>`` the window in days, ``<w0>``/``<w1>``
the first two windows, ``<w0+1>`` the day after the first window, ``<type>`` an event type as
written, ``<type words>`` with underscores as spaces, ``<slug>`` its safe form, ``<h>`` the churn
horizon, ``<label>`` an attribute's column name (underscores as spaces), ``<label words>`` the
same as an agent would say it ("IsActiveMember" → "is active member"), ``<name>`` the feature's
own name. Phrases are ``str.format`` templates filled with the customer's values (see
``serving.reasons``), e.g. ``"last active {recency_days:.0f} days ago"``; the format spec
``yes/no`` (:data:`YES_NO`) reads a flag's value as "yes" or "no".

``compute(a, p)`` receives the ``features.history.Aggregates`` of one as-of date and the
expansion parameters ``p`` (``p.w``, ``p.w0``, ``p.w1``, ``p.code``) and returns one float
array in customer order. Attributes have no ``compute``: they are read from the customers table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, Protocol

import numpy as np

from churnflow.features.naming import slug
from churnflow.features.naming import words as in_words

_SERVICE = re.compile(r"support|ticket|complain|call|incident|issue|service", re.IGNORECASE)
ATTRIBUTE_GROUPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("service", re.compile(r"\b(support|tickets?|complain\w*|incidents?|outages?|service calls?)\b")),
    ("price", re.compile(r"\b(charges?|prices?|pricing|fees?|costs?|discounts?|tariffs?)\b")),
    ("contract", re.compile(r"\b(contracts?|plans?|subscriptions?|commitment|renewals?)\b")),
    ("satisfaction", re.compile(r"\b(\w*satisfaction|nps|csat|sentiment)\b")),
)
"""Reason groups of attributes, from the words of the column's name ("MonthlyCharges" → price,
"Contract" → contract, "JobSatisfaction" → satisfaction, "TechSupport" → service), so that a
snapshot table's reasons lead to different playbook actions; other attributes stay "attribute"."""

Per = Literal["", "window", "event_type", "numeric_attribute", "categorical_attribute"]

YES_NO = "yes/no"
"""Format spec of a flag's value in a phrase: 1 / True / "Yes" read "yes", 0 / False / "No" "no"."""
YES_WORDS = frozenset({"1", "yes", "y", "true", "t"})
NO_WORDS = frozenset({"0", "no", "n", "false", "f"})
"""A two-level text attribute whose levels are one of each is a flag too ("Yes"/"No", "Y"/"N")."""
FLAG_PHRASE = "<label words>: {<name>:" + YES_NO + "}"
"""A yes/no attribute's phrase ("is active member: no", "over time: yes") in place of its
numeric or categorical one: "IsActiveMember is 0" means nothing to an agent."""


@dataclass(frozen=True)
class Params:
    """What a pattern is expanded with (only the fields its family uses are set)."""

    w: int = 0
    w0: int = 0
    w1: int = 0
    code: int = -1
    type: str = ""
    h: int = 0


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    role: str
    """What the feature stands for, looked up by consumers (``FeatureSchema.feature_for``)."""
    group: str
    """Reason group for the playbook (recency, frequency, monetary, rhythm, trend, mix, ...)."""
    unit: str
    meaning: str
    phrase: str
    compute: Callable[[Any, Params], np.ndarray] | None
    needs: frozenset[str] = field(default_factory=frozenset)
    """Conditions on the data: start, events, amount, two_windows, contacts, btyd."""
    per: Per = ""


@dataclass(frozen=True)
class Feature:
    """One concrete feature of one schema: a spec expanded with its window or event type."""

    name: str
    role: str
    group: str
    unit: str
    meaning: str
    phrase: str
    window: int | None
    compute: Callable[[Any], np.ndarray] | None


class SchemaLike(Protocol):
    windows_days: list[int]
    event_types: list[str]
    has_events: bool
    has_amount: bool
    has_signup: bool
    has_contacts: bool
    numeric_attributes: list[str]
    categorical_levels: dict[str, list[str]]
    attribute_sources: dict[str, str]
    btyd: dict[str, Any]


def _spec(name: str, role: str, group: str, unit: str, meaning: str, phrase: str,
          compute: Callable[[Any, Params], np.ndarray] | None, *needs: str, per: Per = "") -> FeatureSpec:
    return FeatureSpec(name, role, group, unit, meaning, phrase, compute, frozenset(needs), per)


SPECS: list[FeatureSpec] = [
    _spec("tenure_days", "tenure", "tenure", "days", "days since the customer started (signup, else first activity)",
          "customer for {tenure_days:.0f} days", lambda a, p: a.tenure, "start"),
    _spec("recency_days", "recency", "recency", "days", "days since the last activity before the as-of date",
          "last active {recency_days:.0f} days ago", lambda a, p: a.last_age, "events"),
    _spec("events_total", "frequency_total", "frequency", "count", "number of activities ever, before the as-of date",
          "{events_total:.0f} activities in total", lambda a, p: a.total, "events"),
    _spec("frequency_<w>d", "frequency", "frequency", "count", "number of activities in the last <w> days",
          "{<name>:.0f} activities in the last <w> days", lambda a, p: a.frequency(p.w), "events", per="window"),
    _spec("monetary_total", "monetary_total", "monetary", "currency", "total spend ever, before the as-of date",
          "spent {monetary_total:,.2f} in total", lambda a, p: a.monetary_total, "amount"),
    _spec("avg_amount", "monetary_average", "monetary", "currency", "average spend per activity",
          "spends {avg_amount:,.2f} per purchase on average", lambda a, p: a.avg_amount, "amount"),
    _spec("monetary_<w>d", "monetary", "monetary", "currency", "spend in the last <w> days",
          "spent {<name>:,.2f} in the last <w> days", lambda a, p: a.monetary(p.w), "amount", per="window"),
    _spec("active_days_total", "active_days", "frequency", "days", "number of distinct days with activity",
          "active on {active_days_total:.0f} different days", lambda a, p: a.active_days, "events"),
    _spec("gap_mean_days", "rhythm", "rhythm", "days", "average number of days between active days",
          "usually active every {gap_mean_days:.0f} days", lambda a, p: a.gap_mean, "events"),
    _spec("gap_std_days", "rhythm_spread", "rhythm", "days", "how much the gaps between active days vary",
          "irregular rhythm: gaps vary by about {gap_std_days:.0f} days", lambda a, p: a.gap_std, "events"),
    _spec("overdue_ratio", "overdue", "recency", "ratio", "days since last activity divided by the usual gap",
          "no activity for {recency_days:.0f} days; usually active every {gap_mean_days:.0f} days",
          lambda a, p: a.overdue_ratio, "events"),
    _spec("trend_frequency", "trend_frequency", "trend", "ratio",
          "activity rate in the last <w0> days relative to the <w0+1>-<w1> days before",
          "activity in the last <w0> days at {trend_frequency:.0%} of the earlier rate",
          lambda a, p: a.trend_frequency(p.w0, p.w1), "events", "two_windows"),
    _spec("trend_monetary", "trend_monetary", "trend", "ratio",
          "spend rate in the last <w0> days relative to the <w0+1>-<w1> days before",
          "spend in the last <w0> days at {trend_monetary:.0%} of the earlier rate",
          lambda a, p: a.trend_monetary(p.w0, p.w1), "amount", "two_windows"),
    _spec("share_<slug>_<w>d", "mix", "mix", "share", "share of activities in the last <w> days that were '<type>'",
          "{<name>:.0%} of recent activity was <type words>", lambda a, p: a.share(p.code, p.w), "events",
          per="event_type"),
    _spec("p_alive", "p_alive", "expected activity", "probability",
          "BG/NBD probability that the customer is still active, from their buying rhythm",
          "only a {p_alive:.0%} chance this customer is still active by their buying rhythm",
          lambda a, p: a.p_alive, "btyd"),
    _spec("expected_active_days", "expected_activity", "expected activity", "days",
          "BG/NBD expected number of active days in the next <h> days",
          "expected to be active on only {expected_active_days:.1f} days in the next <h> days",
          lambda a, p: a.expected_active_days, "btyd"),
    _spec("contacts_365d", "contact_count", "contact", "count", "retention contacts in the last 365 days",
          "contacted {contacts_365d:.0f} times by retention in the last year", lambda a, p: a.contacts_365d,
          "contacts"),
    _spec("days_since_contact", "contact_recency", "contact", "days", "days since the last retention contact",
          "last retention contact {days_since_contact:.0f} days ago", lambda a, p: a.days_since_contact, "contacts"),
    _spec("<slug>", "attribute", "attribute", "number", "customer attribute '<label>'",
          "<label words> is {<name>:,g}", None, per="numeric_attribute"),
    _spec("<slug>", "attribute", "attribute", "category", "customer attribute '<label>' (category)",
          "<label words> is {<name>}", None, per="categorical_attribute"),
]
"""Declaration order is feature order (behaviour first, then attributes)."""


def _met(needs: frozenset[str], schema: SchemaLike) -> bool:
    have = {
        "start": schema.has_events or schema.has_signup,
        "events": schema.has_events,
        "amount": schema.has_events and schema.has_amount,
        "two_windows": len(schema.windows_days) >= 2,
        "contacts": schema.has_contacts,
        "btyd": schema.has_events and bool(schema.btyd),
    }
    return all(have[n] for n in needs)


def _fill(text: str, words: dict[str, str]) -> str:
    for key, value in words.items():
        text = text.replace(key, value)
    return text


def _expand(spec: FeatureSpec, params: Params, name: str | None, label: str, window: int | None,
            group: str | None = None) -> Feature:
    words = {"<w0+1>": str(params.w0 + 1), "<w0>": str(params.w0), "<w1>": str(params.w1), "<w>": str(params.w),
             "<h>": str(params.h), "<type words>": params.type.replace("_", " "), "<type>": params.type,
             "<slug>": slug(params.type), "<label words>": in_words(label), "<label>": label}
    concrete = name if name is not None else _fill(spec.name, words)
    words["<name>"] = concrete
    compute = partial(spec.compute, p=params) if spec.compute is not None else None
    return Feature(concrete, spec.role, group or spec.group, spec.unit, _fill(spec.meaning, words),
                   _fill(spec.phrase, words), window, compute)


def _expansions(spec: FeatureSpec, schema: SchemaLike, base: Params) -> list[Feature]:
    w = schema.windows_days
    if spec.per == "window":
        return [_expand(spec, replace(base, w=d), None, "", d) for d in w]
    if spec.per == "event_type":
        return [_expand(spec, replace(base, w=w[-1], code=code, type=t), None, "", w[-1],
                        "service" if _SERVICE.search(t) else "mix")
                for code, t in enumerate(schema.event_types)]
    if spec.per in ("numeric_attribute", "categorical_attribute"):
        names = schema.numeric_attributes if spec.per == "numeric_attribute" else list(schema.categorical_levels)
        labels = {n: schema.attribute_sources.get(n, n).replace("_", " ") for n in names}
        return [_expand(spec, base, n, labels[n], None, attribute_group(labels[n])) for n in names]
    return [_expand(spec, base, None, "", None)]


def declared_features(schema: SchemaLike, specs: list[FeatureSpec] | None = None) -> list[Feature]:
    """The concrete features a schema implies, in feature order.

    ``specs`` defaults to :data:`SPECS` (read at call time, so a test can add one entry).
    """
    w = schema.windows_days
    base = Params(w0=w[0] if w else 0, w1=w[1] if len(w) > 1 else 0, h=int(schema.btyd.get("horizon_days", 0)))
    out: list[Feature] = []
    for spec in SPECS if specs is None else specs:
        if _met(spec.needs, schema):
            out.extend(_expansions(spec, schema, base))
    return out


def attribute_group(label: str) -> str:
    """The reason group of an attribute column (:data:`ATTRIBUTE_GROUPS`), else "attribute"."""
    said = in_words(label).lower()
    return next((group for group, pattern in ATTRIBUTE_GROUPS if pattern.search(said)), "attribute")


def is_yes_no_pair(levels: list[str]) -> bool:
    """Two category levels that are one yes word and one no word ("No"/"Yes", "f"/"t")."""
    lower = {str(level).strip().lower() for level in levels}
    return len(levels) == 2 and len(lower & YES_WORDS) == 1 and len(lower & NO_WORDS) == 1


def flag_phrase(schema: SchemaLike, name: str) -> str:
    """:data:`FLAG_PHRASE` for the attribute feature ``name``."""
    label = schema.attribute_sources.get(name, name).replace("_", " ")
    return _fill(FLAG_PHRASE, {"<label words>": in_words(label), "<name>": name})


def behaviour_features(schema: SchemaLike) -> list[Feature]:
    """The computed (event, contact, tenure) features: everything but customer attributes."""
    return [f for f in declared_features(schema) if f.compute is not None]


def name_for(role: str) -> str:
    """The name of the single (not per-window, not per-type) feature declared with ``role``.

    For code that works on feature tables without a schema at hand (baselines on frames);
    with a schema, prefer ``FeatureSchema.feature_for``.
    """
    names = [s.name for s in SPECS if s.role == role and s.per == ""]
    if len(names) != 1:
        raise KeyError(f"no single feature declared with role {role!r} in features/spec.py")
    return names[0]
