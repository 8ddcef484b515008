"""Settings checked against the data: every column a setting names must exist.

A typo in a privacy or exclusion setting must not be ignored: ``pii = ["fullname"]`` when the
file says ``full_name`` would let the name column become a feature. So every column named in
``data.columns``, ``features.exclude``, ``features.value_column``, ``features.allow_personal``
and ``serving.contact_fields`` is looked up in the table it belongs to, and a missing one is
reported with its settings key and the closest column names. Optional columns the user did not
name (the code defaults ``amount``, ``signup_time``, ...) are used when present, skipped when not.

Then the customers table's remaining columns, the ones that could become features, are screened
for personal data (``features.personal``) before anything else sees them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import pandas as pd

from churnflow.features.personal import personal_columns
from churnflow.features.settings import Settings

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "signup_time", "churn_time", "label"),
    "events": ("customer_id", "event_time", "amount", "event_type"),
    "contacts": ("customer_id", "contact_time", "campaign", "outcome"),
}
_REQUIRED = {"customer_id", "event_time", "contact_time"}


@dataclass(frozen=True)
class ColumnIssue:
    """One setting naming a column the table lacks (or a column that must not be a feature)."""

    table: str
    """``customers``, ``events`` or ``contacts``."""
    column: str
    """The column as the user wrote it."""
    rule: str


def closest(name: str, present: list[str]) -> str:
    """ "did you mean 'full_name'? " for a near miss (case and spelling), else ""."""
    by_case = [c for c in present if c.lower() == name.lower()]
    close = by_case or difflib.get_close_matches(name, present, n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def _missing(table: str, column: str, key: str, present: list[str]) -> ColumnIssue:
    shown = ", ".join(present[:20]) + (" ..." if len(present) > 20 else "")
    return ColumnIssue(table, column, f"is missing ({key} names it); {closest(column, present)}"
                                      f"columns in the file: {shown}")


def column_mapping(table: str, present: list[str], settings: Settings, require_label: bool = True
                   ) -> tuple[dict[str, str], list[ColumnIssue]]:
    """Canonical name → the user's column for the columns of ``table`` to use, and what is missing."""
    cols = settings.data.columns
    mapping: dict[str, str] = {}
    issues: list[ColumnIssue] = []
    for canonical in TABLE_COLUMNS[table]:
        user = getattr(cols, canonical)
        if not user:
            continue
        if user in present:
            mapping[canonical] = user
            continue
        needed = canonical in _REQUIRED or cols.is_explicit(canonical)
        if canonical == "label":
            needed = require_label
        if needed:
            issues.append(_missing(table, user, f"data.columns.{canonical}", present))
    return mapping, issues


def customer_setting_columns(settings: Settings) -> dict[str, list[str]]:
    """Settings key → the customers-table columns it names (only what the user actually set)."""
    cols, feats, serving = settings.data.columns, settings.features, settings.serving
    named = {
        "data.columns.pii": list(cols.pii) if cols.is_explicit("pii") else [],
        "features.exclude": list(feats.exclude),
        "features.value_column": [feats.value_column] if feats.value_column else [],
        "features.allow_personal": list(feats.allow_personal),
        "serving.contact_fields": list(serving.contact_fields)
        if serving.include_contact_fields or "contact_fields" in serving.model_fields_set else [],
    }
    return {key: names for key, names in named.items() if names}


def customer_setting_issues(present: list[str] | None, settings: Settings) -> list[ColumnIssue]:
    """Every column named by a customers-table setting that the customers table lacks."""
    issues = []
    for key, names in customer_setting_columns(settings).items():
        for name in names:
            if present is None:
                issues.append(ColumnIssue("customers", name, f"is named by {key}, but there is no customers "
                                                             "table (data.customers is empty)"))
            elif name not in present:
                issues.append(_missing("customers", name, key, present))
    return issues


def personal_data_issues(customers: pd.DataFrame, mapping: dict[str, str], settings: Settings) -> list[ColumnIssue]:
    """Columns that could become features but look like personal data, with the two ways out."""
    declared = set(settings.data.columns.pii) | set(settings.features.exclude) | set(settings.features.allow_personal)
    candidates = [c for c in customers.columns if c not in declared and c not in mapping.values()]
    issues = []
    for column, reason in personal_columns(customers, candidates).items():
        issues.append(ColumnIssue("customers", str(column), (
            f"looks like personal data ({reason}) and would become a model feature. Add it to "
            f"data.columns.pii (never a feature, never logged), or, if it is not personal data, "
            f"opt in with features.allow_personal = [\"{column}\"]")))
    return issues
