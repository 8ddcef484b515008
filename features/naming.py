"""Tiny helpers every feature module needs, kept apart so that nothing imports in a circle.

``slug`` turns event types and attribute names into safe feature names, ``words`` into words for
a phrase; ``known_levels`` applies the category levels recorded at training. ``features.spec``,
``features.schema`` and ``features.build`` all import from here, and this module imports nothing
of churnflow.
"""

from __future__ import annotations

import re

import pandas as pd


def slug(value: str) -> str:
    """'Support Call' → 'support_call': lower case, runs of other characters become one '_'."""
    return re.sub(r"[^0-9a-z]+", "_", str(value).lower()).strip("_") or "other"


def words(name: str) -> str:
    """'IsActiveMember' → 'is active member', 'monthly_fee' → 'monthly fee', 'NPS_score' → 'NPS score'.

    A column name as a retention agent would say it in a reason: camel case and separators split,
    lower case except acronyms.
    """
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", str(name))
    tokens = [t for t in re.split(r"[\s_.\-]+", spaced) if t]
    return " ".join(t if len(t) > 1 and t.isupper() else t.lower() for t in tokens) or str(name)


def known_levels(values: pd.Series, levels: list[str]) -> pd.Categorical:
    """A categorical with exactly the recorded levels; values never seen in training become missing.

    Feature building needs this one rule too, and ``features/`` may not import the model kernel
    (``training/churn_model.py``, which imports nothing of churnflow): the kernel holds a twin of
    these three lines, and ``tests/test_spec.py`` checks the two are the same code.
    """
    text = pd.Series(values).astype("string").str.strip()
    return pd.Categorical(text.where(text.isin(levels)), categories=levels)
