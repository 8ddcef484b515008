"""The feature dictionary: what each feature means, in words a retention agent understands.

Each entry carries a plain-language meaning and unit (exported with every feature table and
logged with every model) and a ``phrase`` template that ``serving.reasons`` fills with the
customer's own values to say why they are at risk. Groups tie reasons to playbook actions.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from features.build import slug
from features.schema import FeatureSchema

_SERVICE = re.compile(r"support|ticket|complain|call|incident|issue|service", re.IGNORECASE)


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    meaning: str
    unit: str
    group: str
    phrase: str


def _entries(schema: FeatureSchema) -> list[FeatureInfo]:
    w = schema.windows_days
    e: list[FeatureInfo] = [
        FeatureInfo("tenure_days", "days since the customer started (signup, else first activity)", "days",
                    "tenure", "customer for {tenure_days:.0f} days"),
        FeatureInfo("recency_days", "days since the last activity before the as-of date", "days",
                    "recency", "last active {recency_days:.0f} days ago"),
        FeatureInfo("events_total", "number of activities ever, before the as-of date", "count",
                    "frequency", "{events_total:.0f} activities in total"),
        FeatureInfo("monetary_total", "total spend ever, before the as-of date", "currency",
                    "monetary", "spent {monetary_total:,.2f} in total"),
        FeatureInfo("avg_amount", "average spend per activity", "currency",
                    "monetary", "spends {avg_amount:,.2f} per purchase on average"),
        FeatureInfo("active_days_total", "number of distinct days with activity", "days",
                    "frequency", "active on {active_days_total:.0f} different days"),
        FeatureInfo("gap_mean_days", "average number of days between active days", "days",
                    "rhythm", "usually active every {gap_mean_days:.0f} days"),
        FeatureInfo("gap_std_days", "how much the gaps between active days vary", "days",
                    "rhythm", "irregular rhythm: gaps vary by about {gap_std_days:.0f} days"),
        FeatureInfo("overdue_ratio", "days since last activity divided by the usual gap", "ratio",
                    "recency", "no activity for {recency_days:.0f} days; usually active every {gap_mean_days:.0f} days"),
        FeatureInfo("contacts_365d", "retention contacts in the last 365 days", "count",
                    "contact", "contacted {contacts_365d:.0f} times by retention in the last year"),
        FeatureInfo("days_since_contact", "days since the last retention contact", "days",
                    "contact", "last retention contact {days_since_contact:.0f} days ago"),
    ]
    for d in w:
        e.append(FeatureInfo(f"frequency_{d}d", f"number of activities in the last {d} days", "count",
                             "frequency", f"{{frequency_{d}d:.0f}} activities in the last {d} days"))
        e.append(FeatureInfo(f"monetary_{d}d", f"spend in the last {d} days", "currency",
                             "monetary", f"spent {{monetary_{d}d:,.2f}} in the last {d} days"))
    if len(w) >= 2:
        a, b = w[0], w[1]
        e.append(FeatureInfo("trend_frequency", f"activity rate in the last {a} days relative to the {a + 1}-{b} days before",
                             "ratio", "trend", f"activity in the last {a} days at {{trend_frequency:.0%}} of the earlier rate"))
        e.append(FeatureInfo("trend_monetary", f"spend rate in the last {a} days relative to the {a + 1}-{b} days before",
                             "ratio", "trend", f"spend in the last {a} days at {{trend_monetary:.0%}} of the earlier rate"))
    for t in schema.event_types:
        name = f"share_{slug(t)}_{w[-1]}d"
        group = "service" if _SERVICE.search(t) else "mix"
        e.append(FeatureInfo(name, f"share of activities in the last {w[-1]} days that were '{t}'", "share",
                             group, f"{{{name}:.0%}} of recent activity was {t.replace('_', ' ')}"))
    for name in schema.numeric_attributes:
        label = schema.attribute_sources.get(name, name).replace("_", " ")
        e.append(FeatureInfo(name, f"customer attribute '{label}'", "number", "attribute", f"{label} is {{{name}:,g}}"))
    for name in schema.categorical_levels:
        label = schema.attribute_sources.get(name, name).replace("_", " ")
        e.append(FeatureInfo(name, f"customer attribute '{label}' (category)", "category", "attribute",
                             f"{label} is {{{name}}}"))
    return e


def feature_dictionary(schema: FeatureSchema) -> dict[str, FeatureInfo]:
    """Entries for exactly the schema's features, in feature order."""
    known = {info.name: info for info in _entries(schema)}
    missing = [f for f in schema.features if f not in known]
    if missing:
        raise KeyError(f"no dictionary entry for feature(s) {missing}; add them to features/dictionary.py")
    return {name: known[name] for name in schema.features}


def dictionary_records(schema: FeatureSchema) -> dict[str, dict[str, Any]]:
    """JSON-ready form, as stored with models and exported beside feature tables."""
    return {name: asdict(info) for name, info in feature_dictionary(schema).items()}
