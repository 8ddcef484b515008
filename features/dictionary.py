"""The feature dictionary: what each feature means, in words a retention agent understands.

Each entry carries a plain-language meaning and unit (exported with every feature table and
logged with every model) and a ``phrase`` template that ``serving.reasons`` fills with the
customer's own values to say why they are at risk. Groups tie reasons to playbook actions.
The words themselves are declared with each feature in ``features.spec``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from churnflow.features.schema import FeatureSchema
from churnflow.features.spec import declared_features


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    meaning: str
    unit: str
    group: str
    phrase: str


def feature_dictionary(schema: FeatureSchema) -> dict[str, FeatureInfo]:
    """Entries for exactly the schema's features, in feature order."""
    known = {f.name: FeatureInfo(f.name, f.meaning, f.unit, f.group, f.phrase) for f in declared_features(schema)}
    missing = [f for f in schema.features if f not in known]
    if missing:
        raise KeyError(f"no dictionary entry for feature(s) {missing}; declare them in features/spec.py")
    return {name: known[name] for name in schema.features}


def dictionary_records(schema: FeatureSchema) -> dict[str, dict[str, Any]]:
    """JSON-ready form, as stored with models and exported beside feature tables."""
    return {name: asdict(info) for name, info in feature_dictionary(schema).items()}
