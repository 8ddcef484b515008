"""One declaration per feature: adding a feature or a window touches one place and the feature is
built, explained in the dictionary and usable as a reason. The feature modules import in one
direction only (no cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnflow.features import spec
from churnflow.features.build import build_features, infer_schema
from churnflow.features.dictionary import feature_dictionary
from churnflow.features.settings import Settings
from churnflow.features.spec import FeatureSpec
from churnflow.serving.reasons import top_reasons
from tests.test_features import CONTACTS, CUSTOMERS, EVENTS, T, _settings, _tables

REPO = Path(__file__).resolve().parents[1]


def _reason_of(feats: pd.DataFrame, schema, feature: str, dictionary: dict | None = None) -> pd.Series:
    """Reasons when ``feature`` is every customer's strongest (and only) churn driver."""
    contributions = np.zeros((len(feats), len(schema.features)))
    contributions[:, schema.features.index(feature)] = 1.0
    words = feature_dictionary(schema) if dictionary is None else dictionary
    return top_reasons(contributions, feats, schema.features, words)["reason_1"]


def test_adding_a_feature_is_one_entry_in_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    new = FeatureSpec(
        name="spend_per_active_day", role="monetary_rate", group="monetary", unit="currency",
        meaning="average spend per distinct active day", phrase="spends {spend_per_active_day:,.2f} per active day",
        compute=lambda a, p: np.divide(a.monetary_total, a.active_days, out=np.full(a.n, np.nan),
                                       where=a.active_days > 0),
        needs=frozenset({"amount"}),
    )
    monkeypatch.setattr(spec, "SPECS", [*spec.SPECS, new])
    tables, s = _tables(CUSTOMERS, EVENTS, CONTACTS), _settings()
    schema = infer_schema(tables, s)
    assert "spend_per_active_day" in schema.features
    assert schema.feature_for("monetary_rate") == "spend_per_active_day"
    feats = build_features(tables, T, s, schema).set_index("customer_id", drop=False)
    assert feats.loc[1, "spend_per_active_day"] == pytest.approx(200.0 / 4)  # customer 1: 200 over 4 days
    entry = feature_dictionary(schema)["spend_per_active_day"]
    assert (entry.group, entry.unit) == ("monetary", "currency")
    assert _reason_of(feats, schema, "spend_per_active_day").loc[1] == "spends 50.00 per active day"


def test_adding_a_window_is_one_setting() -> None:
    tables = _tables(CUSTOMERS, EVENTS, CONTACTS)
    s = _settings(features={"windows_days": [14, 30, 90, 365]})
    schema = infer_schema(tables, s)
    assert {"frequency_14d", "monetary_14d"} <= set(schema.features)
    feats = build_features(tables, T, s, schema).set_index("customer_id", drop=False)
    # customer 1: events 10.25, 10.5 and 20.5 days before T, spending 30 + 20 + 10
    assert (feats.loc[1, "frequency_14d"], feats.loc[1, "monetary_14d"]) == (2.0, 50.0)
    assert feats.loc[1, "trend_frequency"] == pytest.approx((2 / 14) / (1 / 16))  # first two windows
    dictionary = feature_dictionary(schema)
    assert dictionary["monetary_14d"].meaning == "spend in the last 14 days"
    assert _reason_of(feats, schema, "frequency_14d").loc[1] == "2 activities in the last 14 days"
    # the longest window still defines value
    assert schema.spend_window() == ("monetary_365d", 365, "tenure_days")
    assert schema.value_feature() == "monetary_365d"


def test_every_declared_phrase_renders_with_the_customers_values() -> None:
    tables, s = _tables(CUSTOMERS, EVENTS, CONTACTS), _settings()
    schema = infer_schema(tables, s)
    feats = build_features(tables, T, s, schema).set_index("customer_id", drop=False)
    assert {"p_alive", "expected_active_days", "share_buy_365d", "fee", "plan"} <= set(schema.features)
    for name in schema.features:
        reason = _reason_of(feats, schema, name).loc[1]
        assert reason and ":" not in reason.split(" ")[0], (name, reason)  # a phrase, not the fallback
    assert _reason_of(feats, schema, "recency_days").loc[1] == "last active 10 days ago"


def test_yes_no_attributes_read_as_yes_or_no_and_column_names_as_words() -> None:
    customers = CUSTOMERS | {
        "IsActiveMember": [0, 1, 0, 1, 1, 0, 1],              # a 0/1 flag
        "OverTime": ["Yes", "No", "No", "Yes", "No", "Yes", "No"],  # a yes/no category
        "NumOfProducts": [0, 1, 2, 1, 0, 1, 1],               # 0, 1 and 2: a count, not a flag
        "BusinessTravel": ["Travel_Rarely", "Non-Travel", "Travel_Rarely", "Non-Travel", "Travel_Rarely",
                           "Travel_Rarely", "Non-Travel"],
    }
    tables, s = _tables(customers, EVENTS, CONTACTS), _settings()
    schema = infer_schema(tables, s)
    feats = build_features(tables, T, s, schema).set_index("customer_id", drop=False)
    dictionary = feature_dictionary(schema, feats)  # as training stores it: with the population

    def reasons(name: str) -> list[str]:
        return _reason_of(feats, schema, name, dictionary).loc[[1, 2, 3]].tolist()

    assert reasons("isactivemember") == ["is active member: no", "is active member: yes", "is active member: no"]
    assert reasons("overtime") == ["over time: yes", "over time: no", "over time: no"]
    assert reasons("numofproducts") == ["num of products is 0", "num of products is 1", "num of products is 2"]
    assert reasons("businesstravel") == ["business travel is Travel Rarely", "business travel is Non-Travel",
                                         "business travel is Travel Rarely"]
    assert dictionary["isactivemember"].unit == "yes/no" and dictionary["overtime"].unit == "yes/no"
    assert dictionary["isactivemember"].meaning == "customer attribute 'IsActiveMember'"  # the column as named
    # Whether a number only holds 0 and 1 is seen on the population: without it, it reads as a number.
    assert feature_dictionary(schema)["isactivemember"].phrase == "is active member is {isactivemember:,g}"


def test_attributes_are_grouped_by_the_words_of_their_names() -> None:
    """The playbook keys on reason groups; attributes named like a price, a contract, satisfaction
    or support get those groups (``plan`` and ``fee`` are in the shared customers table)."""
    customers = CUSTOMERS | {"JobSatisfaction": ["Low", "High", "Low", "High", "Low", "High", "Low"],
                             "TechSupport": ["Yes", "No", "No", "Yes", "No", "Yes", "No"],
                             "PhoneService": ["Yes", "No", "No", "Yes", "No", "Yes", "Yes"]}
    schema = infer_schema(_tables(customers, EVENTS, CONTACTS), _settings())
    groups = {name: info.group for name, info in feature_dictionary(schema).items()}
    assert {n: groups[n] for n in ("plan", "fee", "jobsatisfaction", "techsupport", "phoneservice", "score")} == {
        "plan": "contract", "fee": "price", "jobsatisfaction": "satisfaction", "techsupport": "service",
        "phoneservice": "attribute", "score": "attribute"}
    assert groups["recency_days"] == "recency"  # behaviour features keep their declared group


def test_roles_are_stored_and_survive_saving(tmp_path: Path) -> None:
    tables = _tables(CUSTOMERS, EVENTS, CONTACTS)
    s = _settings(features={"value_column": "fee", "exclude": ["status"]})
    schema = infer_schema(tables, s)
    assert schema.feature_for("recency") == "recency_days"
    assert schema.feature_for("frequency") == "frequency_365d"  # the longest window
    assert schema.window_of("frequency_30d") == 30
    assert schema.roles["fee"] == "monthly_value" and schema.roles["score"] == "attribute"
    assert schema.monthly_value() is None  # events carry spend: value comes from it
    schema.save(tmp_path / "schema.json")
    loaded = type(schema).load(tmp_path / "schema.json")
    assert loaded == schema and loaded.btyd["as_of"].startswith("2021-07-01")


def test_snapshot_table_value_is_the_monthly_value_attribute() -> None:
    from churnflow.features.contracts import validate_tables

    raw = pd.DataFrame({"customer_id": list("abcdef"), "Churn": [0, 1, 0, 1, 0, 0],
                        "monthly_fee": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0], "plan": list("xyxyxy")})
    s = Settings(data={"events": "", "customers": "t.csv", "columns": {"label": "Churn", "signup_time": ""}},
                 churn={"definition": "label"}, features={"value_column": "monthly_fee"})
    schema = infer_schema(validate_tables(raw, None, None, s), s)
    assert schema.spend_window() is None and schema.feature_for("recency") is None
    assert schema.monthly_value() == schema.value_feature() == "monthly_fee"


def _imports(path: Path) -> set[str]:
    """churnflow ``churnflow.features.*`` modules a file imports, anywhere in it (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {
            n for n in names
            if n.startswith("churnflow.features.")
            and (REPO / (n.removeprefix("churnflow.").replace(".", "/") + ".py")).exists()
        }
    return found


def test_feature_modules_import_without_cycles() -> None:
    graph = {f"churnflow.features.{p.stem}": _imports(p) for p in (REPO / "features").glob("*.py")}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join([*path, module])}"
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
    assert "churnflow.features.build" not in graph["churnflow.features.dictionary"]
    assert "churnflow.features.build" not in graph["churnflow.features.schema"]


def test_the_kernel_applies_category_levels_with_the_same_code_as_feature_building() -> None:
    """The one rule kept twice (the self-contained model kernel cannot import churnflow): pinned."""
    import inspect

    from churnflow.features.naming import known_levels as building
    from churnflow.training.churn_model import known_levels as kernel

    def body(fn) -> str:
        return inspect.getsource(fn).split('"""')[-1]

    assert body(building) == body(kernel)
