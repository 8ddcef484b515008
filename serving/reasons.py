"""Plain-language churn reasons from TreeSHAP contributions, rendered for a million rows at once.

A retention agent needs to know *why* a customer is on the list, in words and with the
customer's own numbers ("no activity for 63 days; usually every 12 days"), not a feature name
and a SHAP value. Each feature's phrase is a ``str.format`` template from the feature
dictionary; only features that push the prediction *towards* churn (positive contribution)
count as reasons, so a customer with one risk driver gets one reason and empty strings.

The fast path never loops over rows in Python: the top ``k`` features per row come from
``np.argpartition``; then, for every (reason position, feature) pair, the feature's phrase is
rendered for all rows that have it in that position at once, building strings column-wise with
NumPy's ``StringDType`` string ops. Numbers with the common ``.Nf`` / ``.N%`` specs are formatted
arithmetically; other specs and categorical values are formatted once per *distinct* value.
Text values read as words (``Travel_Frequently`` → ``Travel Frequently``) and the ``yes/no`` spec
(``features.spec.YES_NO``, the phrase of flag attributes) reads 1 / True / "Yes" as "yes".
``reasons_reference`` is the plain per-row implementation, kept only so the benchmark and the
tests can check the fast path against it.

Each call handles one partition of customers independently (no cross-row state), so scoring can
stream partitions through it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from numpy.dtypes import StringDType

from churnflow.features.io import is_missing
from churnflow.features.spec import NO_WORDS, YES_NO, YES_WORDS

UNKNOWN = "unknown"
"""How a missing value (NaN / NA / unseen category) reads inside a phrase."""

_STR = StringDType()
_FIXED = re.compile(r"^\.(\d{1,2})([f%])$")
# Above this magnitude the integer fast path could overflow int64; use Python's format instead.
_FAST_LIMIT = 1e14


def _info(dictionary: Mapping[str, Any], name: str) -> dict[str, str]:
    """Dictionary entry as a plain dict (accepts dicts or ``FeatureInfo``-like objects)."""
    entry = dictionary.get(name)
    if entry is None:
        return {"meaning": name, "unit": "", "group": "", "phrase": ""}
    if isinstance(entry, Mapping):
        return {key: str(entry.get(key, "") or "") for key in ("meaning", "unit", "group", "phrase")}
    return {key: str(getattr(entry, key, "") or "") for key in ("meaning", "unit", "group", "phrase")}


def _fallback_template(name: str, info: Mapping[str, str]) -> str:
    """Used when a feature has no phrase: "<meaning>: <value>" is still readable."""
    label = (info.get("meaning") or name).replace("{", "{{").replace("}", "}}")
    return f"{label}: {{{name}}}"


@lru_cache(maxsize=4096)
def _parse(template: str) -> tuple[tuple[str, str | None, str, str | None], ...]:
    return tuple(string.Formatter().parse(template))


def _template_for(name: str, info: Mapping[str, str], columns: pd.Index) -> str:
    """The feature's phrase, or the fallback if it is malformed or names an absent column."""
    template = info.get("phrase") or ""
    if template:
        try:
            fields = [f for _, f, _, _ in _parse(template) if f is not None]
        except ValueError:
            fields = None
        if fields is not None and all(f and f in columns for f in fields):
            return template
    return _fallback_template(name, info)


def _yes_no_word(value: Any) -> str:
    """A flag's value as "yes" / "no"; anything else as it would read without the spec."""
    if is_missing(value):
        return UNKNOWN
    if isinstance(value, (bool, np.bool_, int, float, np.number)):
        return "yes" if value == 1 else "no" if value == 0 else format(value, "g")
    text = str(value).strip().lower()
    return "yes" if text in YES_WORDS else "no" if text in NO_WORDS else str(value).replace("_", " ")


def _format_one(value: Any, spec: str, conversion: str | None) -> str:
    """Python's own formatting of one value; missing values and bad specs degrade gracefully.
    Text reads as words: underscores become spaces (``Sales_Executive``), as in the column names."""
    if spec == YES_NO and conversion is None:
        return _yes_no_word(value)
    if is_missing(value):
        return UNKNOWN
    if isinstance(value, str) and conversion is None:
        value = value.replace("_", " ")
    if conversion == "r":
        value = repr(value)
    elif conversion in ("s", "a"):
        value = str(value) if conversion == "s" else ascii(value)
    try:
        return format(value, spec)
    except (ValueError, TypeError):
        return str(value)


def _format_by_unique(values: np.ndarray, spec: str, conversion: str | None) -> np.ndarray:
    """Format each distinct value once with Python, then broadcast back to the rows."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object if values.dtype == object else None))
    rendered = np.array([_format_one(u, spec, conversion) for u in uniques] + [UNKNOWN], dtype=_STR)
    return rendered[np.where(codes < 0, len(uniques), codes)]


def _format_fixed(x: np.ndarray, decimals: int, percent: bool) -> np.ndarray:
    """Vectorised ``format(x, ".Nf")`` / ``".N%"`` for finite float64 values below _FAST_LIMIT.

    Rounds half to even on the scaled value like ``format`` does for exactly representable
    halves; values within one ulp of a decimal half may differ in the last digit.
    """
    if percent:
        x = x * 100.0
    scale = 10**decimals
    q = np.rint(x * scale)
    negative = np.signbit(q) | (np.signbit(x) & (q == 0))  # format(-0.2, ".0f") == "-0"
    mag = np.abs(q).astype(np.int64)
    whole = (mag // scale).astype(_STR)
    if decimals:
        frac = np.strings.zfill((mag % scale).astype(_STR), decimals)
        whole = np.strings.add(np.strings.add(whole, "."), frac)
    out = np.where(negative, np.strings.add("-", whole), whole)
    return np.strings.add(out, "%") if percent else out


def format_values(values: pd.Series | np.ndarray, spec: str = "", conversion: str | None = None) -> np.ndarray:
    """Format a column of values like ``format(v, spec)`` would, as a ``StringDType`` array.

    Missing values become ``"unknown"``; the ``yes/no`` spec reads flags (see :func:`_yes_no_word`).
    Exposed for tests and for other reports.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    match = _FIXED.match(spec) if conversion is None else None
    if match and pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        x = series.to_numpy(dtype=np.float64, na_value=np.nan)
        out = np.full(len(x), UNKNOWN, dtype=_STR)
        finite = np.isfinite(x)
        fast = finite & (np.abs(x) * (100.0 if match.group(2) == "%" else 1.0) < _FAST_LIMIT)
        if fast.any():
            out[fast] = _format_fixed(x[fast], int(match.group(1)), match.group(2) == "%")
        slow = ~fast & ~np.isnan(x)  # infinities and huge values
        if slow.any():
            out[slow] = [_format_one(v, spec, None) for v in x[slow]]
        return out
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = series.cat.categories
        rendered = np.array([_format_one(c, spec, conversion) for c in cats] + [UNKNOWN], dtype=_STR)
        codes = series.cat.codes.to_numpy()
        return rendered[np.where(codes < 0, len(cats), codes)]
    arr = series.to_numpy(dtype=object) if series.dtype == object or pd.api.types.is_string_dtype(series.dtype) else series.to_numpy()
    return _format_by_unique(arr, spec, conversion)


def phrase_outlines(dictionary: Mapping[str, Any]) -> dict[str, str]:
    """Feature name → its phrase with the customer's values left out ("last active … days ago",
    "over time: …"): how a report names a reason shared by many customers."""
    outlines = {}
    for name in dictionary:
        info = _info(dictionary, name)
        outlines[name] = re.sub(r"\{[^}]*\}", "…", info["phrase"]) if info["phrase"] else info["meaning"]
    return outlines


def render_phrase(template: str, features: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Render one ``str.format`` template for the given row positions, column-wise."""
    out = np.full(len(rows), "", dtype=_STR)
    for literal, field, spec, conversion in _parse(template):
        if literal:
            out = np.strings.add(out, literal)
        if field is not None:
            column = features[field].iloc[rows]
            rendered = format_values(column.reset_index(drop=True), spec or "", conversion)
            out = np.strings.add(out, rendered)
    return out


def _top_k(contrib: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest contributions per row, largest first.

    Ties are broken by the lower feature index so the result is deterministic.
    """
    n, m = contrib.shape
    k_eff = min(k, m)
    if k_eff < m:
        part = np.argpartition(-contrib, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.broadcast_to(np.arange(m), (n, m)).copy()
    vals = np.take_along_axis(contrib, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if n else np.zeros((0, k_eff), dtype=np.intp)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def _strip_bias(contributions: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
    contrib = np.asarray(contributions)
    if not np.issubdtype(contrib.dtype, np.floating):
        contrib = contrib.astype(np.float64)  # float32 from XGBoost is kept: half the memory
    if contrib.ndim != 2:
        raise ValueError(f"contributions must be 2-D (rows x features), got shape {contrib.shape}")
    if contrib.shape[1] == len(feature_names) + 1:
        return contrib[:, :-1]  # last column is the bias (expected margin), never a reason
    if contrib.shape[1] != len(feature_names):
        raise ValueError(
            f"contributions have {contrib.shape[1]} columns but there are {len(feature_names)} "
            "feature names (expected n_features or n_features + 1 with the bias last)"
        )
    return contrib


def top_reasons(
    contributions: np.ndarray,
    features: pd.DataFrame,
    feature_names: Sequence[str],
    dictionary: Mapping[str, Any],
    k: int = 3,
) -> pd.DataFrame:
    """The k strongest churn drivers of each customer, as phrases with the customer's values.

    ``contributions``: TreeSHAP matrix (n, n_features) or (n, n_features + 1) with the bias
    last, rows aligned with ``features`` (the customer's feature row; phrases may use any of
    its columns). Only positive contributions are reasons; missing positions are ``""``.

    Returns a frame on ``features.index`` with ``reason_1..reason_k`` (str),
    ``reason_group_1`` (dictionary group of the main reason, ``""`` if none) and
    ``reason_feature_1`` (the main reason's feature name, for reason charts).
    """
    names = list(feature_names)
    contrib = _strip_bias(contributions, names)
    n = contrib.shape[0]
    if n != len(features):
        raise ValueError(f"contributions have {n} rows but the feature table has {len(features)}")
    if k < 1:
        raise ValueError("k must be at least 1")
    idx, vals = _top_k(contrib, k)
    infos = [_info(dictionary, name) for name in names]
    templates = [_template_for(name, info, features.columns) for name, info in zip(names, infos, strict=True)]

    out: dict[str, Any] = {}
    for j in range(k):
        col = np.full(n, "", dtype=_STR)
        if j < idx.shape[1]:
            positive = vals[:, j] > 0
            feat = np.where(positive, idx[:, j], -1)
            order = np.argsort(feat, kind="stable")
            sorted_feat = feat[order]
            starts = np.flatnonzero(np.r_[True, sorted_feat[1:] != sorted_feat[:-1]]) if n else []
            bounds = [*list(starts), n]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                f = int(sorted_feat[a])
                if f < 0:
                    continue
                rows = np.sort(order[a:b])
                col[rows] = render_phrase(templates[f], features, rows)
        out[f"reason_{j + 1}"] = col.astype(object)

    groups = np.array([info["group"] for info in infos] + [""], dtype=object)
    name_arr = np.array([*names, ""], dtype=object)
    main = np.where(vals[:, 0] > 0, idx[:, 0], len(names)) if n else np.zeros(0, dtype=np.intp)
    out["reason_group_1"] = groups[main]
    out["reason_feature_1"] = name_arr[main]
    return pd.DataFrame(out, index=features.index).astype(str)


def reasons_reference(
    booster: Any,
    model_frame: pd.DataFrame,
    features: pd.DataFrame,
    feature_names: Sequence[str],
    dictionary: Mapping[str, Any],
    k: int = 3,
) -> pd.DataFrame:
    """The plain way, for the benchmark only: shap's TreeExplainer plus per-row formatting.

    ``model_frame`` is the model's input (``training.churn_model.model_frame``); phrases are rendered from
    ``features``. Same output columns as :func:`top_reasons`.
    """
    import shap
    import xgboost as xgb

    names = list(feature_names)
    dmatrix = xgb.DMatrix(model_frame[names], enable_categorical=True)
    shap_values = np.asarray(shap.TreeExplainer(booster).shap_values(dmatrix))
    infos = [_info(dictionary, name) for name in names]
    templates = [_template_for(name, info, features.columns) for name, info in zip(names, infos, strict=True)]
    formatter = string.Formatter()
    rows_out: list[dict[str, str]] = []
    for i, row in enumerate(features.to_dict("records")):
        clean = {key: (UNKNOWN if is_missing(v) else v) for key, v in row.items()}
        ranked = sorted(range(len(names)), key=lambda f, i=i: (-shap_values[i, f], f))
        ranked = [f for f in ranked[:k] if shap_values[i, f] > 0]
        rec: dict[str, str] = {}
        for j in range(k):
            if j < len(ranked):
                f = ranked[j]
                parts = []
                for literal, field, spec, conv in _parse(templates[f]):
                    parts.append(literal)
                    if field is not None:
                        value = clean[field]
                        if isinstance(value, str) and conv is None:
                            value = value.replace("_", " ")  # text reads as words
                        if value == UNKNOWN:
                            parts.append(UNKNOWN)
                        elif spec == YES_NO and conv is None:
                            parts.append(_yes_no_word(value))
                        else:
                            try:
                                parts.append(formatter.format_field(formatter.convert_field(value, conv), spec or ""))
                            except (ValueError, TypeError):
                                parts.append(str(value))
                rec[f"reason_{j + 1}"] = "".join(parts)
            else:
                rec[f"reason_{j + 1}"] = ""
        rec["reason_group_1"] = infos[ranked[0]]["group"] if ranked else ""
        rec["reason_feature_1"] = names[ranked[0]] if ranked else ""
        rows_out.append(rec)
    columns = [f"reason_{j + 1}" for j in range(k)] + ["reason_group_1", "reason_feature_1"]
    return pd.DataFrame(rows_out, index=features.index, columns=columns).astype(str)


