"""The weekly HTML report: one self-contained page a retention lead can open from a share.

Everything is inline (CSS, a few lines of vanilla JS, charts as inline SVG) so the page works
from a file share, an e-mail attachment or an air-gapped network, and never calls out to a CDN.
The page is a Jinja2 template (``serving/templates/report.html``, with the table and chart
macros in ``macros.html``) rendered with autoescape: customer names and reasons are user data,
and no value reaches the page unescaped. This module only prepares plain values (formatted
text, chart geometry); the markup lives in the templates. The rows of the list are rendered
server-side (readable with JS off, e.g. in a mail preview); the script only adds search and sort
(and reads ``#q=<text>&sort=<column>:<asc|desc>`` from the URL). Output is deterministic: no
wall-clock time unless the summary carries one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from churnflow.features.io import is_missing
from churnflow.features.segments import SEGMENT_MEANINGS
from churnflow.features.spec import ATTRIBUTE_GROUPS
from churnflow.serving.outcomes import Outcomes

TEMPLATES = Path(__file__).with_name("templates")
MAX_LIST_ROWS = 5000
"""Rows of the list shown in the page; the CSV and Parquet files always hold the full list."""

GAINS_COLUMNS = (
    "decile", "n", "churners", "churn_rate", "min_score", "max_score", "cum_share", "cum_recall", "cum_lift",
)
"""The one gains shape the report reads: the records of ``training.evaluate.gains_table``."""

_NUMERIC_LIST = {"rank": "int", "churn_probability": "prob", "value_at_risk": "money"}
_HEADLINE = [
    ("n_scored", "customers scored", "int"),
    ("n_contactable", "to contact this week", "int"),
    ("n_new", "new on the list", "int"),
    ("n_still_on", "still on the list", "int"),
    ("n_suppressed", "held back (contacted recently)", "int"),
    ("n_holdout", "control group (not contacted)", "int"),
    ("n_dropped", "dropped off since last week", "int"),
    ("list_value_at_risk", "value at risk on the list", "money"),
    ("mean_probability", "mean churn probability (all scored)", "pct"),
]
_SECTION_KEYS = {"warnings", "holdout_why", "decay_alarm", "estimate_before_horizon", "as_of", "tiers_listed", "tiers_scored", "segments_listed", "reason_groups_listed", "drift", "n_listed"}
_TIER_ORDER = {"high": 0, "medium": 1, "low": 2}
_DRIFT_SEVERITY = {"fail": 0, "missing": 0, "warn": 1, "ok": 2}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _fmt(value: Any, kind: str = "") -> str:
    """Deterministic display formatting."""
    if is_missing(value):
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{float(value):,.2f}"
    if kind == "pct":
        return f"{float(value) * 100:.1f}%"
    if kind == "prob":
        return f"{float(value):.4f}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# ---- chart geometry (the SVG markup is in macros.html) --------------------------------------
def bar_chart(labels: Sequence[str], values: Sequence[float], width: int = 460, unit: str = "") -> dict[str, Any]:
    """Horizontal bars: the SVG size and, per bar, its label, y, width and value text. The label
    column widens (up to 330 px) for long labels such as reason phrases."""
    bar_h, gap, right = 20, 6, 70
    left = min(330, max(150, 7 * max((len(str(label)) for label in labels), default=0) + 14))
    width += left - 150
    top = max([*values, 1e-12])
    bars = [
        {
            "label": str(label),
            "y": gap + i * (bar_h + gap),
            "w": f"{(width - left - right) * (value / top):.1f}",
            "text": f"{_fmt(value)}{unit}",
            "text_x": f"{left + (width - left - right) * (value / top) + 6:.1f}",
        }
        for i, (label, value) in enumerate(zip(labels, values, strict=True))
    ]
    return {"width": width, "height": len(bars) * (bar_h + gap) + gap, "left": left, "bar_h": bar_h, "bars": bars}


def line_chart(x: Sequence[float], y: Sequence[float], width: int = 460, height: int = 260) -> dict[str, Any]:
    """Cumulative gains curve (share contacted vs share of churners caught) with the random line."""
    left, bottom, pad, right = 44, 34, 12, 24
    pw, ph = width - left - right, height - bottom - pad

    def px(v: float) -> str:
        return f"{left + pw * min(max(v, 0.0), 1.0):.1f}"

    def py(v: float) -> str:
        return f"{pad + ph * (1 - min(max(v, 0.0), 1.0)):.1f}"

    ticks = [{"x": px(t), "y": py(t), "label": f"{t:.0%}"} for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return {
        "width": width, "height": height, "ticks": ticks,
        "x0": px(0), "x1": px(1), "y0": py(0), "y1": py(1),
        "axis_y": height - bottom + 16, "label_x": left - 6, "title_x": f"{left + pw / 2:.1f}",
        "points": " ".join(f"{px(a)},{py(b)}" for a, b in zip([0.0, *x], [0.0, *y], strict=True)),
    }


def time_chart(dates: Sequence[str], series: Sequence[Mapping[str, Any]], lo: float, hi: float, *,
               fmt: str = "pct", reference: tuple[str, float] | None = None,
               intervals: Sequence[tuple[float, float] | None] | None = None,
               width: int = 520, height: int = 240) -> dict[str, Any]:
    """One value per published list (x: the lists in date order, evenly spaced) as SVG geometry.

    ``series``: ``{"name", "values", "color", "dashed"}`` (a missing value leaves a gap);
    ``reference``: a labelled horizontal line; ``intervals``: a vertical bar per list (95 % CI).
    """
    left, right, top, bottom = 66, 16, 14, 44
    pw, ph = width - left - right, height - top - bottom
    span = hi - lo if hi > lo else 1.0

    def px(i: int) -> float:
        return left + (pw * (i + 0.5) / max(len(dates), 1))

    def py(v: float) -> float:
        return top + ph * (1 - (min(max(v, lo), hi) - lo) / span)

    def label(v: float) -> str:
        return f"{v * 100:.0f}%" if fmt == "pct" else (f"{v * 100:+.1f} pp" if fmt == "pp" else f"{v:.2f}")

    def ok(v: Any) -> bool:
        return not is_missing(v) and np.isfinite(float(v))

    step = max(1, -(-len(dates) // 5))  # at most five date labels
    lines = [{"name": s["name"], "color": s["color"], "dash": "5 4" if s.get("dashed") else "",
              "points": " ".join(f"{px(i):.1f},{py(float(v)):.1f}" for i, v in enumerate(s["values"]) if ok(v)),
              "dots": [{"x": f"{px(i):.1f}", "y": f"{py(float(v)):.1f}", "title": f"{dates[i]}: {label(float(v))}"}
                       for i, v in enumerate(s["values"]) if ok(v)]} for s in series]
    bars = [{"x": f"{px(i):.1f}", "y1": f"{py(b[0]):.1f}", "y2": f"{py(b[1]):.1f}",
             "title": f"{dates[i]}: 95 % interval {label(b[0])} to {label(b[1])}"}
            for i, b in enumerate(intervals or []) if b is not None]
    return {
        "width": width, "height": height, "x0": left, "x1": width - right, "lines": lines, "bars": bars,
        "yticks": [{"y": f"{py(lo + span * k / 4):.1f}", "label": label(lo + span * k / 4)} for k in range(5)],
        "xticks": [{"x": f"{px(i):.1f}", "label": pd.Timestamp(d).strftime("%d %b %y")}
                   for i, d in enumerate(dates) if i % step == 0],
        "axis_y": height - bottom + 16, "label_x": left - 6,
        "reference": None if reference is None else {"y": f"{py(reference[1]):.1f}", "label": reference[0]},
        "legend": [{"name": s["name"], "color": s["color"], "dash": "5 4" if s.get("dashed") else "",
                    "x": left + 150 * k} for k, s in enumerate(series)],
        "legend_y": height - 6,
    }


# ---- sections: plain values for the template ---------------------------------------------------
def _counts(summary_counts: Any, frame: pd.DataFrame, column: str) -> list[tuple[str, int]]:
    if isinstance(summary_counts, Mapping) and summary_counts:
        items = [(str(k), int(v)) for k, v in summary_counts.items()]
    elif column in frame.columns:
        items = [(str(k), int(v)) for k, v in frame[column].astype(str).value_counts().items()]
    else:
        items = []
    return sorted(items, key=lambda kv: (-kv[1], kv[0]))


def _tiers(summary: Mapping[str, Any], priority_list: pd.DataFrame) -> dict[str, Any]:
    listed = dict(_counts(summary.get("tiers_listed"), priority_list, "risk_tier"))
    scored = dict(_counts(summary.get("tiers_scored"), pd.DataFrame(), "risk_tier"))
    tiers = sorted(set(listed) | set(scored), key=lambda t: (_TIER_ORDER.get(t, 9), t))
    rows = [
        [(t, f"tier-{t}" if t in _TIER_ORDER else ""), (_fmt(scored.get(t), "int"), ""), (_fmt(listed.get(t, 0), "int"), "")]
        for t in tiers
    ]
    return {"rows": rows, "chart": bar_chart(tiers, [listed.get(t, 0) for t in tiers])}


def _segments(priority_list: pd.DataFrame) -> list[list[tuple[str, str]]]:
    if priority_list.empty or "segment" not in priority_list.columns:
        return []
    g = priority_list.groupby(priority_list["segment"].astype(str), sort=True).agg(
        customers=("customer_id", "size"),
        mean_probability=("churn_probability", "mean"),
        value_at_risk=("value_at_risk", "sum"),
    )
    g = g.sort_values(["customers"], ascending=False, kind="mergesort")
    return [
        [(seg, ""), (_fmt(r.customers, "int"), ""), (_fmt(r.mean_probability, "pct"), ""), (_fmt(r.value_at_risk, "money"), "")]
        for seg, r in g.iterrows()
    ]


def _segment_meanings(segments: list[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """What each segment on the list means (``features.segments``), in the table's order."""
    return [(row[0][0], SEGMENT_MEANINGS[row[0][0]]) for row in segments if row[0][0] in SEGMENT_MEANINGS]


def _actions(priority_list: pd.DataFrame) -> list[list[tuple[str, str]]]:
    """The week's work by playbook action and channel (how many calls, how many e-mails)."""
    if priority_list.empty or not {"recommended_action", "channel"} <= set(priority_list.columns):
        return []
    counts = priority_list.groupby(["recommended_action", "channel"], sort=True).size()
    counts = counts.sort_values(ascending=False, kind="mergesort")
    return [[(str(action), ""), (str(channel), ""), (_fmt(n, "int"), "")] for (action, channel), n in counts.items()]


def _reasons(summary: Mapping[str, Any], priority_list: pd.DataFrame,
             reason_words: Mapping[str, str]) -> dict[str, Any] | None:
    items = _counts(summary.get("reason_groups_listed"), priority_list, "reason_group_1")
    # A snapshot table's drivers are all attributes, grouped at most by their names (price,
    # contract...): the features themselves say more, in the list's words ("over time: …").
    of_attributes = {"attribute", "none", *(group for group, _ in ATTRIBUTE_GROUPS)}
    if len(items) < 2 or {group for group, _ in items} <= of_attributes:
        features = _counts(summary.get("top_reasons_listed"), priority_list, "reason_feature_1")
        items = [(reason_words.get(name) or name, n) for name, n in features] or items
    return bar_chart([k for k, _ in items], [v for _, v in items]) if items else None


def gains_points(gains: Sequence[Mapping[str, Any]] | None) -> list[dict[str, float]]:
    """``[{"share", "recall", "lift"}]`` by share from the records of ``gains_table``.

    Rows whose recall is unknown (no churner in the test period) are left out. Raises
    ``ValueError`` naming the keys when a row is not a ``gains_table`` record.
    """
    points = []
    for row in gains or []:
        missing = [k for k in GAINS_COLUMNS if k not in row]
        if missing:
            raise ValueError(f"gains rows must be training.evaluate.gains_table records; missing {missing}")
        if not (is_missing(row["cum_share"]) or is_missing(row["cum_recall"])):
            lift = row["cum_lift"]
            points.append({"share": float(row["cum_share"]), "recall": float(row["cum_recall"]),
                           "lift": float("nan") if is_missing(lift) else float(lift)})
    return sorted(points, key=lambda p: p["share"])


def _gains(gains: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    points = gains_points(gains)
    if not points:
        return None
    rows = [
        [(_fmt(p["share"], "pct"), ""), (_fmt(p["recall"], "pct"), ""), ("" if is_missing(p["lift"]) else f"{p['lift']:.2f}", "")]
        for p in points
    ]
    return {"chart": line_chart([p["share"] for p in points], [p["recall"] for p in points]), "rows": rows}


def _drift(drift: pd.DataFrame | None, words: Mapping[str, str]) -> dict[str, Any] | None:
    """The drift table, worst first; each feature in the list's words, its column name beside
    them (what an engineer searches the feature table for)."""
    if drift is None or drift.empty:
        return None
    d = drift.assign(
        _sev=drift["status"].map(_DRIFT_SEVERITY).fillna(3), _psi=drift["psi"].astype(float).fillna(np.inf)
    ).sort_values(["_sev", "_psi", "feature"], ascending=[True, False, True], kind="mergesort")
    rows = [
        [(_named(str(r.feature), words), ""), ("" if is_missing(r.psi) else f"{float(r.psi):.4f}", ""),
         (str(r.status), f"status-{r.status}")]
        for r in d.itertuples()
    ]
    counts = drift["status"].value_counts()
    note = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("fail", "warn", "ok") if counts.get(s, 0))
    return {"note": note, "rows": rows}


def _named(feature: str, words: Mapping[str, str]) -> str:
    said = words.get(feature)
    return f"{said} ({feature})" if said and said != feature else feature


def _span(values: Sequence[Any], floor: float | None = None, ceil: float | None = None) -> tuple[float, float]:
    """A y range around the finite values, with a little room."""
    v = [float(x) for x in values if x is not None and np.isfinite(float(x))]
    lo, hi = (min(v), max(v)) if v else (0.0, 1.0)
    pad = max((hi - lo) * 0.15, 0.02)
    return (lo - pad if floor is None else max(floor, lo - pad)), (hi + pad if ceil is None else min(ceil, hi + pad))


def _history(outcomes: Outcomes | None) -> dict[str, Any] | None:
    """The report cards of past lists as pictures (and one table), or None before the first list."""
    if outcomes is None or not (outcomes.cards or outcomes.estimates):
        return None
    lists = sorted([*outcomes.cards, *outcomes.estimates], key=lambda c: c["as_of"])
    dates = [c["as_of"] for c in lists]
    est = [c.get("estimate_before_horizon") or {} for c in lists]
    quality = [c.get("model_quality") or {} for c in lists]
    campaign = [c.get("campaign") or {} for c in lists]
    predicted = [c.get("predicted_churn_rate", e.get("churn_rate")) for c, e in zip(lists, est, strict=True)]
    realised = [c.get("realised_churn_rate") for c in lists]
    auc = [q.get("roc_auc") for q in quality]
    test_auc = next((c.get("model_test_roc_auc") for c in reversed(outcomes.cards) if c.get("model_test_roc_auc")), None)
    effect = [k.get("difference") for k in campaign]
    ci = [tuple(k["difference_ci95"]) if k.get("difference_ci95") else None for k in campaign]
    charts = {
        "churn": time_chart(dates, [{"name": "predicted", "values": predicted, "color": "#9aa3b5", "dashed": True},
                                    {"name": "realised", "values": realised, "color": "#2f5fb3"}],
                            *_span([*predicted, *realised], floor=0.0, ceil=1.0)),
        "auc": time_chart(dates, [{"name": "realised ROC-AUC", "values": auc, "color": "#2f5fb3"},
                                  {"name": "label-free estimate", "values": [e.get("roc_auc") for e in est],
                                   "color": "#9aa3b5", "dashed": True}],
                          *_span([*auc, test_auc], floor=0.0, ceil=1.0), fmt="num",
                          reference=None if test_auc is None else (f"test {test_auc:.3f}", float(test_auc))),
        "lift": time_chart(dates, [{"name": "realised lift of the list", "values": [q.get("list_lift") for q in quality],
                                    "color": "#2f5fb3"}],
                           *_span([q.get("list_lift") for q in quality], floor=0.0), fmt="num"),
        "effect": time_chart(dates, [{"name": "contacted minus control churn", "values": effect, "color": "#2e7d32"}],
                             *_span([*effect, *(b for pair in ci if pair for b in pair), 0.0]), fmt="pp",
                             reference=("no effect", 0.0), intervals=ci),
    }
    rows = [[(c["as_of"], ""), (str(c.get("model_version") or ""), ""), (_fmt(p, "pct"), ""),
             (_fmt(r, "pct") if c.get("horizon_closed") else "horizon open", ""),
             ("" if a is None else f"{a:.3f}", ""), (str(k.get("verdict") or ""), "")]
            for c, p, r, a, k in zip(lists, predicted, realised, auc, campaign, strict=True)]
    return {"charts": charts, "rows": rows, "alarm": outcomes.alarm or {},
            "n_closed": len(outcomes.cards), "n_open": len(outcomes.estimates)}


_REASON = re.compile(r"reason_\d+")
"""The list's reason columns: sentences, given room so that a row is not a column of words."""


def _list_rows(priority_list: pd.DataFrame, max_rows: int) -> dict[str, Any]:
    """Header and cells of the list table: (text, data-v, class) per cell."""
    shown = priority_list.head(max_rows)
    columns = [
        {"key": c, "label": c.replace("_", " "), "numeric": c in _NUMERIC_LIST} for c in shown.columns
    ]
    rows = []
    for rec in shown.itertuples(index=False, name=None):
        cells = []
        for c, v in zip(shown.columns, rec, strict=True):
            if c in _NUMERIC_LIST:
                cells.append(("" if is_missing(v) else repr(float(v)), _fmt(v, _NUMERIC_LIST[c]), "num"))
            else:
                text = "" if is_missing(v) else str(v)
                cells.append((text, text, f"tier-{text}" if c == "risk_tier" else "reason" if _REASON.fullmatch(c) else ""))
        rows.append(cells)
    return {"columns": columns, "rows": rows}


def render_report(
    summary: Mapping[str, Any],
    priority_list: pd.DataFrame,
    gains: Sequence[Mapping[str, Any]] | None = None,
    drift: pd.DataFrame | None = None,
    *,
    max_rows: int = MAX_LIST_ROWS,
    outcomes: Outcomes | None = None,
    reason_words: Mapping[str, str] | None = None,
) -> str:
    """The report page as one HTML string (see module docstring).

    ``summary``: ``serving.priority.build_summary`` output (any extra keys are listed under
    "Run details"); ``gains``: the records of ``training.evaluate.gains_table`` (the bundle's
    ``metrics["gains"]``); ``drift``: ``features.profile.population_stability`` output;
    ``reason_words``: feature name → how the reasons chart and the drift table name it
    (``serving.reasons.phrase_outlines`` of the model's dictionary), else the name.
    """
    as_of = summary.get("as_of", "")
    model = " ".join(str(summary[k]) for k in ("model_name", "model_version") if summary.get(k) not in (None, ""))
    subtitle = (f"Model {model}. " if model else "") + (
        f"Capacity {_fmt(summary.get('capacity'), 'int') or 'unlimited'}; "
        f"minimum probability {_fmt(summary.get('min_probability', 0), 'pct')}."
    )
    known = {k for k, _, _ in _HEADLINE} | _SECTION_KEYS
    segments = _segments(priority_list)
    return _environment().get_template("report.html").render(
        title=f"Churn priority list \u2014 {as_of}" if as_of else "Churn priority list",
        subtitle=subtitle,
        warnings=[str(w) for w in summary.get("warnings") or []],
        holdout_why=str(summary.get("holdout_why", "")),
        history=_history(outcomes),
        cards=[(_fmt(summary.get(key), kind), label) for key, label, kind in _HEADLINE if key in summary],
        tiers=_tiers(summary, priority_list),
        segments=segments,
        segment_meanings=_segment_meanings(segments),
        actions=_actions(priority_list),
        reasons=_reasons(summary, priority_list, reason_words or {}),
        gains=_gains(gains),
        drift=_drift(drift, reason_words or {}),
        shown=f"{min(len(priority_list), max_rows):,}",
        total=f"{len(priority_list):,}" if len(priority_list) > max_rows else "",
        list=_list_rows(priority_list, max_rows),
        details=[
            [(k, ""), (_fmt(v), "")] for k, v in sorted(summary.items())
            if k not in known and not isinstance(v, Mapping | list)
        ],
    )
