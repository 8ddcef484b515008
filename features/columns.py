"""Settings checked against the data: every column a setting names must exist.

A typo in a privacy or exclusion setting must not be ignored: ``pii = ["fullname"]`` when the
file says ``full_name`` would let the name column become a feature. So every column named in
``data.columns``, ``features.exclude``, ``features.value_column``, ``features.allow_personal``
and ``serving.contact_fields`` is looked up in the table it belongs to, and a missing one is
reported with its settings key and the closest column names. Optional columns the user did not
name (the code defaults ``amount``, ``signup_time``, ...) are used when present, skipped when not.

Then the customers table's remaining columns, the ones that could become features, are screened
for personal data (``features.personal``) before anything else sees them: one that looks personal
and is not declared is left out of the run (said loudly, with the two ways to settle it), so a
first run on a table with a ``Surname`` column works and never uses it.
"""

from __future__ import annotations

import difflib
import re
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
    if _headerless(present):  # the "names" are a customer's values: never shown (they may be personal data)
        return ColumnIssue(table, column, f"is missing ({key} names it). The first line looks like data, not "
                                          "column names: add a header line with the names, or name the columns "
                                          "in [data.columns] after adding it")
    shown = ", ".join(present[:20]) + (" ..." if len(present) > 20 else "")
    return ColumnIssue(table, column, f"is missing ({key} names it); {closest(column, present)}"
                                      f"columns in the file: {shown}")


def _headerless(present: list[str]) -> bool:
    """A file without a header line: its first row of data became the column names (numbers,
    dates, amounts or e-mail addresses, which no header names a column)."""
    looks_like_data = [p for p in present if re.fullmatch(r"[-+$€£]?\s*[\d.,:/ T-]+|[^@\s]+@[^@\s]+\.\w+",
                                                          p.strip())]
    return bool(present) and len(looks_like_data) >= max(1, len(present) // 2)


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
    return mapping, issues + mapped_twice(table, mapping)


def mapped_twice(table: str, mapping: dict[str, str]) -> list[ColumnIssue]:
    """One column of the file mapped to two roles (``signup_time`` and ``churn_time`` both
    "joined") would be parsed twice and used as both: refused, naming both keys."""
    roles: dict[str, list[str]] = {}
    for canonical, user in mapping.items():
        roles.setdefault(user, []).append(f"data.columns.{canonical}")
    return [ColumnIssue(table, user, f"is named by {' and '.join(keys)}; each setting needs its own column "
                                     "(use \"\" for one your data do not have)")
            for user, keys in roles.items() if len(keys) > 1]


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


def undeclared_personal_columns(customers: pd.DataFrame, mapping: dict[str, str], settings: Settings
                                ) -> dict[str, str]:
    """Columns that could become features but look like personal data → why they look so.

    Columns declared anywhere (pii, exclude, allow_personal) and mapped columns are not screened.
    """
    return {str(c): reason for c, reason in personal_columns(customers, screened_columns(customers, mapping, settings)
                                                             ).items()}


def screened_columns(customers: pd.DataFrame, mapping: dict[str, str], settings: Settings) -> list[str]:
    """The customers columns the personal-data screen looks at: neither mapped nor declared."""
    declared = set(settings.data.columns.pii) | set(settings.features.exclude) | set(settings.features.allow_personal)
    return [c for c in customers.columns if c not in declared and c not in mapping.values()]


def personal_data_note(source: str, column: str, reason: str) -> str:
    """What is said about an undeclared personal-looking column: it is left out, and how to settle it."""
    return (f"{source}: column '{column}' looks like personal data ({reason}): it is left out (never a "
            f"feature, its values are not used or written anywhere). Settle it in your settings: add it to "
            f"data.columns.pii, or, if it is not personal data, opt in with "
            f"features.allow_personal = [\"{column}\"]")


def personal_contact_field_issue(column: str, reason: str) -> ColumnIssue:
    """A contact field that looks personal but is not declared would become a model feature."""
    return ColumnIssue("customers", column, (
        f"looks like personal data ({reason}) and serving.contact_fields names it, but data.columns.pii does "
        f"not: add it to data.columns.pii, so it is shown on the list but never used as a model feature"))
