"""Point-in-time features: everything known about each customer strictly before the as-of date.

One function, ``build_features``, builds the table for training snapshots and for weekly
scoring, so the two can never drift apart. It only looks at the rows of the customers it is
given, so it runs unchanged on one partition of customers at a time (Dask, chunks); what must
be global (category levels, which attributes are features) is decided once by ``infer_schema``
and passed in.

Implementation note: aggregations use ``np.bincount`` over integer customer positions instead
of many pandas group-bys; at 20M events this is the difference between seconds and minutes.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contracts import Tables
from features.labels import active_customers, check_label_window, churn_labels
from features.schema import FeatureSchema
from features.settings import Settings

DAY = np.timedelta64(1, "D")
MAX_EVENT_TYPES = 8
NUMERIC_SHARE = 0.95
"""Share of non-blank text values that must parse as numbers for a column to count as numeric."""
_RESERVED = {"customer_id", "signup_time", "churn_time", "label"}


# ---- attribute typing ----------------------------------------------------------------------------


def _parse_number_text(values: pd.Series) -> pd.Series:
    """'1,200', ' 3 450 ', '$12.5', '' → 1200.0, 3450.0, 12.5, NaN."""
    arrow = pa.array(values.astype("string[pyarrow]").array, type=pa.large_string()) if len(values) else pa.array([], pa.large_string())
    cleaned = pc.replace_substring_regex(arrow, r"[,\s$€£%]", "")
    text = pd.Series(cleaned.to_pandas().to_numpy(), index=values.index, dtype="string[pyarrow]").replace("", pd.NA)
    return pd.to_numeric(text, errors="coerce").astype("float64")


def known_levels(values: pd.Series, levels: list[str]) -> pd.Categorical:
    """A categorical with exactly the recorded levels; values never seen in training become missing."""
    text = pd.Series(values).astype("string").str.strip()
    return pd.Categorical(text.where(text.isin(levels)), categories=levels)


def slug(value: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(value).lower()).strip("_") or "other"


def infer_schema(tables: Tables, settings: Settings) -> FeatureSchema:
    """Decide, once and on the training data, which columns become which features.

    Static attributes are typed the way a careful analyst would: numbers stored as text become
    numbers, low-cardinality text becomes a categorical with recorded levels, and identifiers,
    free text, dates, constants, personal data and excluded columns are dropped with a reason.
    """
    cu = tables.customers
    pii = {p for p in settings.pii_columns}
    excluded = set(settings.features.exclude)
    max_levels = settings.features.max_category_levels
    numeric_attributes: list[str] = []
    levels: dict[str, list[str]] = {}
    dropped: dict[str, str] = {}
    for col in cu.columns:
        if col in _RESERVED:
            continue
        series = cu[col]
        non_null = series.dropna()
        if col in pii:
            dropped[col] = "personal data (data.columns.pii): never a feature"
        elif col in excluded:
            dropped[col] = "excluded by features.exclude"
        elif non_null.nunique() <= 1:
            dropped[col] = "constant or empty: carries no information"
        elif pd.api.types.is_datetime64_any_dtype(series):
            dropped[col] = "date attribute: when it was recorded is unknown, so it may leak the future"
        elif pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            if pd.api.types.is_integer_dtype(series) and non_null.nunique() == len(cu) and len(cu) > max_levels:
                dropped[col] = "identifier: a different whole number for every customer"
            else:
                numeric_attributes.append(col)
        else:
            text = non_null.astype("string[pyarrow]").str.strip()
            text = text[text != ""]
            distinct = pd.Series(text.unique()[:20_000], dtype="string[pyarrow]")
            parsed = _parse_number_text(distinct)
            if len(text) and parsed.notna().mean() >= NUMERIC_SHARE:
                numeric_attributes.append(col)
            elif text.nunique() <= max_levels:
                levels[col] = sorted(text.unique().tolist())
            else:
                dropped[col] = (
                    f"identifier or free text: {text.nunique()} distinct values "
                    f"(more than features.max_category_levels = {max_levels})"
                )

    has_events = tables.events is not None and len(tables.events) > 0
    event_types: list[str] = []
    if has_events and tables.events is not None and "event_type" in tables.events:
        counts = tables.events["event_type"].value_counts()
        counts = counts[counts > 0]  # a category column remembers levels of rows cut away
        event_types = sorted(counts.index[:MAX_EVENT_TYPES].tolist())
        if len(event_types) < 2:
            event_types = []
    has_amount = has_events and tables.events is not None and "amount" in tables.events
    has_contacts = tables.contacts is not None
    schema = FeatureSchema(
        features=[],
        categorical_levels=levels,
        numeric_attributes=numeric_attributes,
        event_types=event_types,
        dropped=dropped,
        windows_days=list(settings.features.windows_days),
        has_amount=bool(has_amount),
        has_events=bool(has_events),
        has_contacts=has_contacts,
        has_signup="signup_time" in cu.columns,
    )
    # Attribute feature names must be safe for XGBoost and format templates: cleaned, and
    # prefixed when they would collide with a behaviour feature.
    behaviour = behaviour_feature_names(schema)
    sources: dict[str, str] = {}
    for col in numeric_attributes + list(levels):
        name = slug(col)
        if name in behaviour or name in sources:
            name = f"attr_{name}"
        sources[name] = col
    rename = {col: name for name, col in sources.items()}
    return FeatureSchema(**(schema.to_dict() | {
        "features": behaviour + [rename[c] for c in numeric_attributes] + [rename[c] for c in levels],
        "numeric_attributes": [rename[c] for c in numeric_attributes],
        "categorical_levels": {rename[c]: v for c, v in levels.items()},
        "attribute_sources": sources,
    }))


def behaviour_feature_names(schema: FeatureSchema) -> list[str]:
    """The event/contact feature names a schema implies, in a fixed order."""
    # Tenure needs a start: a signup date or a first event (a bare snapshot table has neither).
    names = ["tenure_days"] if schema.has_events or schema.has_signup else []
    if schema.has_events:
        w = schema.windows_days
        names += ["recency_days", "events_total"] + [f"frequency_{d}d" for d in w]
        if schema.has_amount:
            names += ["monetary_total", "avg_amount"] + [f"monetary_{d}d" for d in w]
        names += ["active_days_total", "gap_mean_days", "gap_std_days", "overdue_ratio"]
        if len(w) >= 2:
            names += ["trend_frequency"] + (["trend_monetary"] if schema.has_amount else [])
        names += [f"share_{slug(t)}_{w[-1]}d" for t in schema.event_types]
    if schema.has_contacts:
        names += ["contacts_365d", "days_since_contact"]
    return names


# ---- features ------------------------------------------------------------------------------------


def build_features(tables: Tables, as_of: pd.Timestamp, settings: Settings, schema: FeatureSchema,
                   customer_ids: pd.Index | None = None) -> pd.DataFrame:
    """Features of every active customer at ``as_of`` from rows dated strictly before it.

    Returns ``customer_id``, ``as_of`` and ``schema.features`` in schema order.
    """
    as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
    t = as_of.to_datetime64()
    if customer_ids is None:
        customer_ids = active_customers(
            tables, as_of, settings.churn.min_tenure_days,
            require_history=settings.churn.definition != "label" or schema.has_events,
        )
    ids = pd.Index(customer_ids)
    n = len(ids)
    out: dict[str, np.ndarray | pd.Categorical] = {}

    cu = tables.customers.set_index("customer_id")
    if "signup_time" in cu:
        signup = cu["signup_time"].reindex(ids).to_numpy()
    else:
        signup = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")

    if schema.has_events and tables.events is not None:
        out.update(_event_features(tables.events, ids, t, schema, signup))
    elif "tenure_days" in schema.features:
        out["tenure_days"] = (t - signup) / DAY
    if schema.has_contacts:
        out.update(_contact_features(tables.contacts, ids, t))

    src = schema.attribute_sources
    for name in schema.numeric_attributes:
        col = src.get(name, name)
        values = cu[col].reindex(ids) if col in cu else pd.Series(np.nan, index=ids)
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[name] = values.astype("float64").to_numpy()
        else:
            out[name] = _parse_number_text(values).to_numpy()
    for name, levels in schema.categorical_levels.items():
        col = src.get(name, name)
        values = cu[col].reindex(ids) if col in cu else pd.Series(pd.NA, index=ids)
        out[name] = known_levels(values, levels)

    frame = pd.DataFrame({"customer_id": ids.to_numpy(), "as_of": np.full(n, as_of.to_datetime64())})
    features = pd.DataFrame({name: out[name] for name in schema.features})
    return pd.concat([frame, features], axis=1)


def _grouped_in_time_order(pos: np.ndarray, times: np.ndarray) -> bool:
    """True when each customer's rows are adjacent and in time order (validated tables are)."""
    if len(pos) < 2:
        return True
    change = pos[1:] != pos[:-1]
    runs = int(change.sum()) + 1
    return runs == int(np.count_nonzero(np.bincount(pos))) and bool(np.all(change | (times[1:] >= times[:-1])))


def _event_type_codes(events: pd.DataFrame, event_types: list[str]) -> np.ndarray:
    """Position of each row's type in ``event_types`` (-1 for others), without string compares."""
    col = events["event_type"]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype("category")
    lookup = pd.Index(event_types).get_indexer(col.cat.categories)
    codes = col.cat.codes.to_numpy()
    return np.where(codes >= 0, lookup[codes], -1)


def _event_features(events: pd.DataFrame, ids: pd.Index, t: np.datetime64, schema: FeatureSchema,
                    signup: np.ndarray) -> dict[str, np.ndarray]:
    n = len(ids)
    all_times = events["event_time"].to_numpy()
    before = all_times < t
    pos = ids.get_indexer(events["customer_id"].to_numpy()[before])
    keep = pos >= 0
    pos = pos[keep]
    times = all_times[before][keep]
    amount = np.nan_to_num(events["amount"].to_numpy(dtype="float64")[before][keep]) if schema.has_amount else None
    types = _event_type_codes(events, schema.event_types)[before][keep] if schema.event_types else None
    if not _grouped_in_time_order(pos, times):
        order = np.lexsort((times, pos))
        pos, times = pos[order], times[order]
        amount = amount[order] if amount is not None else None
        types = types[order] if types is not None else None
    age = (t - times) / DAY  # days before as-of, > 0

    def count(mask: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        if mask is None:
            return np.bincount(pos, weights=weights, minlength=n).astype("float64")
        return np.bincount(pos[mask], weights=None if weights is None else weights[mask], minlength=n).astype("float64")

    # Rows of a customer are adjacent and in time order: first row = first event, last = latest.
    change = pos[1:] != pos[:-1]
    starts = np.r_[0, np.flatnonzero(change) + 1] if len(pos) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:] - 1, len(pos) - 1] if len(pos) else starts
    last_age = np.full(n, np.nan)
    first_age = np.full(n, np.nan)
    last_age[pos[starts]] = age[ends]
    first_age[pos[starts]] = age[starts]

    f: dict[str, np.ndarray] = {}
    total = count()
    tenure = (t - signup) / DAY
    tenure = np.where(np.isnan(tenure), first_age, tenure)  # the same start as labels.customer_start
    f["tenure_days"] = tenure
    f["recency_days"] = last_age
    f["events_total"] = total
    windows = schema.windows_days
    freq = {w: count(age <= w) for w in windows}
    for w in windows:
        f[f"frequency_{w}d"] = freq[w]
    if amount is not None:
        f["monetary_total"] = count(weights=amount)
        f["avg_amount"] = np.divide(f["monetary_total"], total, out=np.full(n, np.nan), where=total > 0)
        money = {w: count(age <= w, amount) for w in windows}
        for w in windows:
            f[f"monetary_{w}d"] = money[w]

    # Rhythm: gaps between distinct active days ("purchase-days" in the RFM literature). Whole
    # days before T fall (weakly) along each customer's rows, so a new day is a change of value.
    day = np.ceil(age).astype(np.int64)  # calendar days before T: 00:00 and 10:00 of one day agree
    new_day = np.r_[True, change | (day[1:] != day[:-1])] if len(pos) else np.zeros(0, dtype=bool)
    dpos, dday = pos[new_day], day[new_day]
    same = dpos[1:] == dpos[:-1]
    gaps = (dday[:-1] - dday[1:])[same].astype("float64")
    gpos = dpos[1:][same]
    n_gaps = np.bincount(gpos, minlength=n).astype("float64")
    gsum = np.bincount(gpos, weights=gaps, minlength=n)
    gsq = np.bincount(gpos, weights=gaps * gaps, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap_mean = np.where(n_gaps > 0, gsum / n_gaps, np.nan)
        gap_var = np.where(n_gaps > 1, (gsq - n_gaps * gap_mean**2) / np.maximum(n_gaps - 1, 1), np.nan)
        f["active_days_total"] = np.bincount(dpos, minlength=n).astype("float64")
        f["gap_mean_days"] = gap_mean
        f["gap_std_days"] = np.sqrt(np.clip(gap_var, 0, None))
        f["overdue_ratio"] = last_age / gap_mean
        if len(windows) >= 2:
            w0, w1 = windows[0], windows[1]
            earlier = (freq[w1] - freq[w0]) / (w1 - w0)
            f["trend_frequency"] = np.where(earlier > 0, (freq[w0] / w0) / np.where(earlier > 0, earlier, 1), np.nan)
            if amount is not None:
                m_earlier = (money[w1] - money[w0]) / (w1 - w0)
                f["trend_monetary"] = np.where(m_earlier > 0, (money[w0] / w0) / np.where(m_earlier > 0, m_earlier, 1), np.nan)
        if types is not None:
            wl = windows[-1]
            in_window = age <= wl
            denominator = np.where(freq[wl] > 0, freq[wl], 1)
            for code, name in enumerate(schema.event_types):
                f[f"share_{slug(name)}_{wl}d"] = np.where(
                    freq[wl] > 0, count(in_window & (types == code)) / denominator, np.nan
                )
    return f


def _group_first(pos: np.ndarray, values: np.ndarray, n: int, largest: bool) -> np.ndarray:
    """Per-customer min (or max) of ``values`` for unordered rows; NaN for customers without rows."""
    out = np.full(n, np.nan)
    if len(pos):
        order = np.lexsort((-values if largest else values, pos))
        p = pos[order]
        first = np.r_[True, p[1:] != p[:-1]]
        out[p[first]] = values[order][first]
    return out


def _contact_features(contacts: pd.DataFrame | None, ids: pd.Index, t: np.datetime64) -> dict[str, np.ndarray]:
    n = len(ids)
    if contacts is None or not len(contacts):
        return {"contacts_365d": np.zeros(n), "days_since_contact": np.full(n, np.nan)}
    before = contacts["contact_time"].to_numpy() < t
    pos = ids.get_indexer(contacts["customer_id"].to_numpy()[before])
    keep = pos >= 0
    pos = pos[keep]
    age = (t - contacts["contact_time"].to_numpy()[before][keep]) / DAY
    return {
        "contacts_365d": np.bincount(pos[age <= 365], minlength=n).astype("float64"),
        "days_since_contact": _group_first(pos, age, n, largest=False),
    }


# ---- snapshots -------------------------------------------------------------------------------------


def snapshot_as_of(tables: Tables) -> pd.Timestamp:
    """As-of date for a snapshot table (no dates to split on): the day after the data end."""
    return tables.end_date.normalize() + pd.Timedelta(days=1)


def build_snapshots(tables: Tables, as_of_dates: list[pd.Timestamp], settings: Settings,
                    schema: FeatureSchema, with_labels: bool = True) -> pd.DataFrame:
    """Stack feature tables (plus ``label`` when ``with_labels``) for several as-of dates.

    The same call builds training snapshots and label-free scoring tables.
    """
    frames = []
    for as_of in as_of_dates:
        as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
        feats = build_features(tables, as_of, settings, schema)
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
