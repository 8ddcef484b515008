"""The feature dictionary: what each feature means, in words a retention agent understands.

Each entry carries a plain-language meaning and unit (exported with every feature table and
logged with every model) and a ``phrase`` template that ``serving.reasons`` fills with the
customer's own values to say why they are at risk. Groups tie reasons to playbook actions.
The words themselves are declared with each feature in ``features.spec``.

Yes/no attributes (a 0/1 or True/False column, a "Yes"/"No" category) get the flag phrase
("is active member: no") instead of "IsActiveMember is 0". A category's levels are in the schema;
whether a numeric column only ever holds 0 and 1 is seen on the training population, so the
dictionary stored with the model is the one that knows (without it, numbers read as numbers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from churnflow.features.schema import FeatureSchema
from churnflow.features.spec import declared_features, flag_phrase, is_yes_no_pair


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    meaning: str
    unit: str
    group: str
    phrase: str


def flag_attributes(schema: FeatureSchema, population: pd.DataFrame | None = None) -> list[str]:
    """The attribute features that are yes/no flags: categories whose two levels are a yes and a
    no, and numeric attributes holding exactly the values 0 and 1 in ``population`` (a feature
    table of the training population; numeric ones are not flags without it)."""
    flags = [name for name, levels in schema.categorical_levels.items() if is_yes_no_pair(levels)]
    if population is not None:
        for name in schema.numeric_attributes:
            if name in population.columns:
                values = pd.to_numeric(population[name], errors="coerce").to_numpy(np.float64)
                seen = np.unique(values[~np.isnan(values)])
                if len(seen) == 2 and seen[0] == 0.0 and seen[1] == 1.0:
                    flags.append(name)
    flagged = set(flags)
    return [name for name in schema.features if name in flagged]


def feature_dictionary(schema: FeatureSchema, population: pd.DataFrame | None = None) -> dict[str, FeatureInfo]:
    """Entries for exactly the schema's features, in feature order; ``population`` (the training
    population's feature table) lets 0/1 numeric attributes read as yes/no."""
    known = {f.name: FeatureInfo(f.name, f.meaning, f.unit, f.group, f.phrase) for f in declared_features(schema)}
    missing = [f for f in schema.features if f not in known]
    if missing:
        raise KeyError(f"no dictionary entry for feature(s) {missing}; declare them in features/spec.py")
    for name in flag_attributes(schema, population):
        known[name] = replace(known[name], unit="yes/no", phrase=flag_phrase(schema, name))
    return {name: known[name] for name in schema.features}


def dictionary_records(schema: FeatureSchema, population: pd.DataFrame | None = None) -> dict[str, dict[str, Any]]:
    """JSON-ready form, as stored with models and exported beside feature tables."""
    return {name: asdict(info) for name, info in feature_dictionary(schema, population).items()}
