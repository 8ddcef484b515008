"""Point-in-time features: everything known about each customer strictly before the as-of date.

One function, ``build_features``, builds the table for training snapshots and for weekly
scoring, so the two can never drift apart. Which features exist, what they mean and how each is
computed is declared once in ``features.spec``; the per-customer aggregates they are computed
from live in ``features.history``. It only looks at the rows of the customers it is given, so
it runs unchanged on one partition of customers at a time (Dask, chunks); what must be global
(category levels, which attributes are features, BG/NBD parameters) is decided once by
``infer_schema`` and passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churnflow.features.btyd import Histories, fit_histories
from churnflow.features.contracts import Tables
from churnflow.features.history import Aggregates, positions
from churnflow.features.labels import active_customers, check_label_window, churn_labels
from churnflow.features.naming import known_levels, slug
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.features.spec import behaviour_features, declared_features
from churnflow.features.words import factorize_text

MAX_EVENT_TYPES = 8
NUMERIC_SHARE = 0.95
"""Share of non-blank text values that must parse as numbers for a column to count as numeric."""
_RESERVED = {"customer_id", "signup_time", "churn_time", "label"}


# ---- attribute typing ----------------------------------------------------------------------------


def _parse_number_text(values: pd.Series) -> pd.Series:
    """'1,200', ' 3 450 ', '$12.5', '' → 1200.0, 3450.0, 12.5, NaN.

    Text columns repeat a few values (a credit limit, a fee): each distinct text is parsed once.
    (Only typed text: in an object column ``True`` and ``1`` would count as one value.)
    """
    if not isinstance(values.dtype, pd.StringDtype) or len(values) < 2:
        return _parse_each_number_text(values)
    codes, distinct = pd.factorize(values)  # -1: missing
    parsed = np.append(_parse_each_number_text(pd.Series(distinct)).to_numpy(), np.nan)
    return pd.Series(parsed[codes], index=values.index)


def _parse_each_number_text(values: pd.Series) -> pd.Series:
    """Blanks, currency and percent signs dropped; a comma only as a thousands separator in
    groups of three ("1,200"), as ``contracts.parse_amounts`` reads amounts: "35,99" (a decimal
    comma) is not a number here, never 3599 (``data.decimal = ","`` reads such files)."""
    arrow = pa.array(values.astype("string[pyarrow]").array, type=pa.large_string()) if len(values) else pa.array([], pa.large_string())
    cleaned = pc.replace_substring_regex(arrow, r"[\s$€£%]", "")
    grouped = pc.match_substring_regex(cleaned, r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")
    cleaned = pc.if_else(grouped, pc.replace_substring(cleaned, ",", ""), cleaned)
    text = pd.Series(cleaned.to_pandas().to_numpy(), index=values.index, dtype="string[pyarrow]").replace("", pd.NA)
    return pd.to_numeric(text, errors="coerce").astype("float64")


parse_number_text = _parse_number_text
"""Public name: serving checks that numeric inputs still parse as numbers on scoring day."""


_DATE_TEXT = r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2}))(?:[ T][\d:.]+\S*)?"
DATE_REASON = "date attribute: when it was recorded is unknown, so it may leak the future"


def _looks_like_dates(distinct: pd.Series) -> bool:
    """Dates stored as text ('2024-03-14', '14/03/2024 10:00'): most of a sample parse as dates."""
    sample = distinct.head(200).astype(str)
    if not sample.str.fullmatch(_DATE_TEXT).all():
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed", dayfirst=False)
    return bool(parsed.notna().mean() >= NUMERIC_SHARE)


def left_out_note(schema: FeatureSchema) -> str:
    """Which customer columns are not features and why, said once after training ("" if none)."""
    if not schema.dropped:
        return ""
    return "columns not used as features: " + "; ".join(f"'{c}' ({why})" for c, why in schema.dropped.items())


def _type_text(series: pd.Series, max_levels: int) -> list[str] | str | None:
    """Text column: None when numeric, its sorted levels when categorical, else why it is dropped."""
    text = series.dropna().astype("string[pyarrow]").str.strip()
    text = text[text != ""]
    every = text.unique()  # hashed once: a million free-text values cost a hash pass each time
    distinct = pd.Series(every[:20_000], dtype="string[pyarrow]")
    if len(text) and _parse_number_text(distinct).notna().mean() >= NUMERIC_SHARE:
        return None
    if len(text) and _looks_like_dates(distinct):
        return (f"{DATE_REASON}; if it is when the customer joined, map it: "
                f"data.columns.signup_time = \"{series.name}\"")
    if len(text) and distinct.str.fullmatch(r"[-+]?\d+,\d+").mean() >= NUMERIC_SHARE:
        return (f"numbers written with a decimal comma (e.g. {distinct.iloc[0]!r}): set data.decimal = \",\" to read "
                "them as numbers")
    if len(every) <= max_levels:
        return sorted(every.tolist())
    return (f"identifier or free text: {len(every)} distinct values "
            f"(more than features.max_category_levels = {max_levels})")


def _type_column(series: pd.Series, n_rows: int, settings: Settings) -> list[str] | str | None:
    """One customers column: None = numeric feature, list = category levels, str = dropped (why)."""
    col = series.name
    non_null = series.dropna()
    max_levels = settings.features.max_category_levels
    if col in set(settings.pii_columns):
        return "personal data (data.columns.pii): never a feature"
    if col in set(settings.features.exclude):
        return "excluded by features.exclude"
    if non_null.nunique() <= 1:
        return "constant or empty: carries no information"
    if pd.api.types.is_datetime64_any_dtype(series):
        return DATE_REASON
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        if pd.api.types.is_integer_dtype(series) and non_null.nunique() == n_rows and n_rows > max_levels:
            return "identifier: a different whole number for every customer"
        return None
    return _type_text(series, max_levels)


def _type_attributes(customers: pd.DataFrame, settings: Settings
                     ) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """Static attributes typed the way a careful analyst would: numeric, categorical or dropped."""
    numeric: list[str] = []
    levels: dict[str, list[str]] = {}
    dropped: dict[str, str] = {}
    for col in customers.columns:
        if col in _RESERVED:
            continue
        kind = _type_column(customers[col], len(customers), settings)
        if kind is None:
            numeric.append(col)
        elif isinstance(kind, list):
            levels[col] = kind
        else:
            dropped[col] = kind
    return numeric, levels, dropped


def _event_types(tables: Tables) -> list[str]:
    """The (at most ``MAX_EVENT_TYPES``) event types that get a share feature; none if fewer than 2."""
    if tables.events is None or not len(tables.events) or "event_type" not in tables.events:
        return []
    counts = tables.events["event_type"].value_counts()
    counts = counts[counts > 0]  # a category column remembers levels of rows cut away
    event_types = sorted(counts.index[:MAX_EVENT_TYPES].tolist())
    return event_types if len(event_types) >= 2 else []


# ---- the schema ------------------------------------------------------------------------------------


def infer_schema(tables: Tables, settings: Settings) -> FeatureSchema:
    """Decide, once and on the training data, which columns become which features.

    Static attributes are typed the way a careful analyst would: numbers stored as text become
    numbers, low-cardinality text becomes a categorical with recorded levels, and identifiers,
    free text, dates, constants, personal data and excluded columns are dropped with a reason.
    Behaviour features follow from the data (events, amounts, event types, contacts) and the
    spec; each feature's role is recorded. With events, BG/NBD is fitted at the day after the
    data end (the model's as-of date) and stored, to be applied unchanged at scoring.
    """
    cu = tables.customers
    numeric, levels, dropped = _type_attributes(cu, settings)
    has_events = tables.events is not None and len(tables.events) > 0
    # BG/NBD is fitted on each customer's event rows; a schema decided on a summary of the data
    # (the Dask engine's proxy) has none: it declares the features, the engine fits them.
    has_rows = has_events and {"customer_id", "event_time"} <= set(tables.events.columns)
    schema = FeatureSchema(
        features=[],
        categorical_levels=levels,
        numeric_attributes=numeric,
        event_types=_event_types(tables),
        dropped=dropped,
        windows_days=list(settings.features.windows_days),
        has_amount=bool(has_events and tables.events is not None and "amount" in tables.events),
        has_events=bool(has_events),
        has_contacts=tables.contacts is not None,
        has_signup="signup_time" in cu.columns,
        btyd={"horizon_days": settings.churn.horizon_days} if has_events else {},
    )
    schema = _with_features(_with_attribute_names(schema), settings.features.value_column)
    return with_btyd_fitted(tables, snapshot_as_of(tables), settings, schema) if has_rows else schema


def with_btyd_fitted(tables: Tables, as_of: pd.Timestamp, settings: Settings, schema: FeatureSchema) -> FeatureSchema:
    """``schema`` with BG/NBD parameters fitted at ``as_of`` (customers active then, rows before
    it), to be applied unchanged at ``as_of`` and every later date: at scoring, per partition."""
    if not schema.btyd:
        return schema
    return with_btyd_params(schema, as_of, _fit_btyd_at(tables, as_of, settings, schema))


def _with_attribute_names(schema: FeatureSchema) -> FeatureSchema:
    """Attribute feature names safe for XGBoost and format templates: cleaned, and prefixed when
    they would collide with a behaviour feature."""
    behaviour = set(behaviour_feature_names(schema))
    sources: dict[str, str] = {}
    for col in schema.numeric_attributes + list(schema.categorical_levels):
        name = slug(col)
        if name in behaviour or name in sources:
            name = f"attr_{name}"
        sources[name] = col
    rename = {col: name for name, col in sources.items()}
    return FeatureSchema(**(schema.to_dict() | {
        "numeric_attributes": [rename[c] for c in schema.numeric_attributes],
        "categorical_levels": {rename[c]: v for c, v in schema.categorical_levels.items()},
        "attribute_sources": sources,
    }))


def _with_features(schema: FeatureSchema, value_column: str) -> FeatureSchema:
    """The feature list, roles and windows the spec declares for this schema."""
    declared = declared_features(schema)
    roles = {f.name: f.role for f in declared}
    for name, source in schema.attribute_sources.items():
        if value_column and source == value_column and name in schema.numeric_attributes:
            roles[name] = "monthly_value"
    return FeatureSchema(**(schema.to_dict() | {
        "features": [f.name for f in declared],
        "roles": roles,
        "windows": {f.name: f.window for f in declared if f.window is not None},
    }))


def behaviour_feature_names(schema: FeatureSchema) -> list[str]:
    """The event/contact feature names a schema implies, in a fixed order."""
    return [f.name for f in behaviour_features(schema)]


# ---- features ------------------------------------------------------------------------------------


def build_features(tables: Tables, as_of: pd.Timestamp, settings: Settings, schema: FeatureSchema,
                   customer_ids: pd.Index | None = None) -> pd.DataFrame:
    """Features of every active customer at ``as_of`` from rows dated strictly before it.

    Returns ``customer_id``, ``as_of`` and ``schema.features`` in schema order. BG/NBD features
    use the schema's parameters when they were fitted at ``as_of`` or earlier; at an earlier date
    they are fitted on the customers active then in ``tables`` (so a partition holding only its
    own rows needs a schema fitted at or before ``as_of``, as a trained model's is for scoring).
    """
    as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
    whole_population = customer_ids is None
    ids = pd.Index(_population(tables, as_of, settings, schema) if customer_ids is None else customer_ids)
    params = _btyd_params(tables, as_of, settings, schema, whole_population)
    rows = _customer_rows(tables.customers, ids)  # (one lookup for the signup dates and every attribute)
    aggregates = _aggregates(tables, ids, as_of, settings, schema, params, rows)
    out: dict[str, Any] = {f.name: f.compute(aggregates) for f in behaviour_features(schema)}
    out.update(_attributes(tables.customers, ids, schema, rows))
    frame = pd.DataFrame({"customer_id": ids.to_numpy(), "as_of": np.full(len(ids), as_of.to_datetime64())})
    features = pd.DataFrame(_own_arrays(out, schema.features), copy=False)
    return pd.concat([frame, features], axis=1)


def _own_arrays(columns: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``columns[names]`` for a frame that takes them as they are, each feature an array of its own
    (one returned twice is copied). Copied into one block, 24 columns of a million rows were
    192 MB of fresh memory written, ~0.3 s of page faults on a process's first build."""
    seen: set[int] = set()
    out = {}
    for name in names:
        out[name] = columns[name].copy() if id(columns[name]) in seen else columns[name]
        seen.add(id(columns[name]))
    return out


def _population(tables: Tables, as_of: pd.Timestamp, settings: Settings, schema: FeatureSchema) -> pd.Index:
    return active_customers(tables, as_of, settings.churn.min_tenure_days,
                            require_history=settings.churn.definition != "label" or schema.has_events)


def _customer_rows(customers: pd.DataFrame, ids: pd.Index) -> np.ndarray:
    """Row of each of ``ids`` in ``customers`` (-1: not there): looked up once (merged when both
    are sorted), shared by every column read (a ``reindex`` per column repeats the lookup)."""
    return positions(pd.Index(customers["customer_id"]), ids)


def _column_at(customers: pd.DataFrame, col: str, ids: pd.Index, rows: np.ndarray) -> pd.Series:
    """``customers[col]`` of ``ids`` (found at ``rows``), as ``set_index(...)[col].reindex(ids)``
    gives it: taken by position when every id is there (same dtype), else reindexed (missing)."""
    if (rows < 0).any():
        return customers.set_index("customer_id")[col].reindex(ids)
    return customers[col].take(rows).set_axis(ids)


def _aggregates(tables: Tables, ids: pd.Index, as_of: pd.Timestamp, settings: Settings, schema: FeatureSchema,
                btyd_params: dict[str, float] | None, rows: np.ndarray | None = None) -> Aggregates:
    cu = tables.customers
    if "signup_time" in cu:
        signup = _column_at(cu, "signup_time", ids, _customer_rows(cu, ids) if rows is None else rows).to_numpy()
    else:
        signup = np.full(len(ids), np.datetime64("NaT"), dtype="datetime64[ns]")
    return Aggregates(ids, as_of.to_datetime64(), signup, tables.events if schema.has_events else None,
                      tables.contacts if schema.has_contacts else None, event_types=schema.event_types,
                      with_amount=schema.has_amount, btyd_params=btyd_params,
                      horizon_days=int(schema.btyd.get("horizon_days", 0)), windows=schema.windows_days)


def _btyd_params(tables: Tables, as_of: pd.Timestamp, settings: Settings, schema: FeatureSchema,
                 whole_population: bool) -> dict[str, float] | None:
    """BG/NBD parameters for features at ``as_of``, point in time.

    Parameters fitted at the model's as-of date apply at that date and any later one (scoring:
    no refit). An earlier as-of date (a training snapshot) gets its own fit on the customers
    active then, from rows before it only. ``None``: the whole population is being built, fit
    on it directly.
    """
    if not schema.btyd or "p_alive" not in schema.features:
        return None
    fitted_at = schema.btyd.get("as_of")
    if fitted_at is not None and as_of >= pd.Timestamp(fitted_at):
        return {k: float(schema.btyd[k]) for k in ("r", "alpha", "a", "b") if k in schema.btyd}
    return None if whole_population else _fit_btyd_at(tables, as_of, settings, schema)


def btyd_histories(tables: Tables, as_of: pd.Timestamp, settings: Settings, schema: FeatureSchema) -> Histories:
    """The BG/NBD histories of the customers active at ``as_of`` in ``tables`` (rows before it).

    Per partition, they add up (``Histories.merge``) to the whole population's.
    """
    as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
    ids = _population(tables, as_of, settings, schema)
    return _aggregates(tables, pd.Index(ids), as_of, settings, schema, None).btyd_histories


def _fit_btyd_at(tables: Tables, as_of: pd.Timestamp, settings: Settings, schema: FeatureSchema) -> dict[str, float]:
    """BG/NBD parameters fitted on the customers active at ``as_of``, from rows before it."""
    return fit_histories(btyd_histories(tables, as_of, settings, schema))


def with_btyd_params(schema: FeatureSchema, as_of: pd.Timestamp, params: dict[str, float]) -> FeatureSchema:
    """``schema`` carrying BG/NBD ``params`` fitted at ``as_of`` (valid at that date and later)."""
    as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
    btyd = {"horizon_days": schema.btyd["horizon_days"]} | params | {"as_of": as_of.isoformat()}
    return FeatureSchema(**(schema.to_dict() | {"btyd": btyd}))


def _attributes(customers: pd.DataFrame, ids: pd.Index, schema: FeatureSchema, rows: np.ndarray) -> dict[str, Any]:
    """Numeric attributes as float64 (numbers stored as text parsed), categories with training levels
    (``ids`` found at ``rows`` of ``customers``, -1: not there)."""
    cu = customers
    src = schema.attribute_sources
    out: dict[str, Any] = {}
    for name in schema.numeric_attributes:
        col = src.get(name, name)
        values = _column_at(cu, col, ids, rows) if col in cu else pd.Series(np.nan, index=ids)
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[name] = values.to_numpy(dtype="float64", copy=True)  # (the table's own, not a view of the customers')
        else:
            out[name] = _parse_number_text(values).to_numpy(dtype="float64", copy=True)
    for name, levels in schema.categorical_levels.items():
        col = src.get(name, name)
        if col in cu:  # (the levels of the whole column, then taken: the codes, not the texts, are taken)
            out[name] = _known_levels_once_each(cu[col], levels).take(rows, allow_fill=True)
        else:
            out[name] = _known_levels_once_each(pd.Series(pd.NA, index=ids), levels)
    return out


def _known_levels_once_each(values: pd.Series, levels: list[str]) -> pd.Categorical:
    """``known_levels(values, levels)``, applied to each distinct text once (a million customers
    hold a handful of plans). Typed text only: in an object column ``True`` and ``1`` are one value."""
    if not isinstance(values.dtype, pd.StringDtype) or len(values) < 2:
        return known_levels(values, levels)
    codes, distinct = factorize_text(values)  # -1: missing, which is no level
    of_distinct = known_levels(pd.Series(distinct), levels)
    lookup = np.append(of_distinct.codes, -1).astype(of_distinct.codes.dtype)
    return pd.Categorical.from_codes(lookup[codes], dtype=of_distinct.dtype)


# ---- snapshots -------------------------------------------------------------------------------------


def snapshot_as_of(tables: Tables) -> pd.Timestamp:
    """As-of date for a snapshot table (no dates to split on): the day after the data end."""
    return tables.end_date.normalize() + pd.Timedelta(days=1)


def build_snapshots(tables: Tables, as_of_dates: list[pd.Timestamp], settings: Settings,
                    schema: FeatureSchema, with_labels: bool = True,
                    btyd_params: Mapping[pd.Timestamp, dict[str, float]] | None = None) -> pd.DataFrame:
    """Stack feature tables (plus ``label`` when ``with_labels``) for several as-of dates.

    The same call builds training snapshots and label-free scoring tables. ``btyd_params``: BG/NBD
    parameters per as-of date, fitted on all customers when ``tables`` hold one partition of them
    (``features.partitioned``); without them each date fits its own population in ``tables``.
    """
    frames = []
    for as_of in as_of_dates:
        as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
        at = with_btyd_params(schema, as_of, btyd_params[as_of]) if btyd_params and as_of in btyd_params else schema
        feats = build_features(tables, as_of, settings, at)
        if with_labels:
            if settings.churn.definition != "label":
                check_label_window(tables, as_of, settings.churn.horizon_days)
            labels = churn_labels(tables, as_of, settings.churn.horizon_days, settings.churn.definition,
                                  pd.Index(feats["customer_id"]))
            feats["label"] = labels.to_numpy()
        frames.append(feats)
    out = pd.concat(frames, ignore_index=True)
    for col, levels in schema.categorical_levels.items():
        out[col] = known_levels(out[col], levels)
    return out


def latest_as_of(tables: Tables, today: pd.Timestamp | None = None) -> pd.Timestamp:
    """The as-of date a run uses when none is given: today, or the day after the data end when
    the data stop earlier (a demo extract, a late export), so no week of silence is invented."""
    today = pd.Timestamp.today().normalize() if today is None else pd.Timestamp(today).normalize()
    return min(today, tables.end_date.normalize() + pd.Timedelta(days=1)).as_unit("ns")
