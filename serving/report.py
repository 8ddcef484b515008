"""The weekly HTML report: one self-contained page a retention lead can open from a share.

Everything is inline (CSS, a few lines of vanilla JS, charts as inline SVG) so the page works
from a file share, an e-mail attachment or an air-gapped network, and never calls out to a CDN.
Every value from the data is HTML-escaped: customer names and reasons are user data. The rows
of the list are rendered server-side (readable with JS off, e.g. in a mail preview); the script
only adds search and sort (and reads ``#q=<text>&sort=<column>:<asc|desc>`` from the URL).
Output is deterministic: no wall-clock time unless the summary carries one.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd

TEMPLATE = Path(__file__).with_name("templates") / "report.html"
MAX_LIST_ROWS = 5000
"""Rows of the list shown in the page; the CSV and Parquet files always hold the full list."""

_NUMERIC_LIST = {"rank", "churn_probability", "value_at_risk"}
_HEADLINE = [
    ("n_scored", "customers scored", "int"),
    ("n_contactable", "to contact this week", "int"),
    ("n_new", "new on the list", "int"),
    ("n_still_on", "still on the list", "int"),
    ("n_suppressed", "held back (contacted recently)", "int"),
    ("n_dropped", "dropped off since last week", "int"),
    ("list_value_at_risk", "value at risk on the list", "money"),
    ("mean_probability", "mean churn probability (all scored)", "pct"),
]


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _fmt(value: Any, kind: str = "") -> str:
    """Deterministic display formatting."""
    if _missing(value):
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


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool], classes: Sequence[Sequence[str]] | None = None) -> str:
    """Rows are already escaped/formatted HTML cell contents."""
    head = "".join(f'<th class="num">{_e(h)}</th>' if n else f"<th>{_e(h)}</th>" for h, n in zip(headers, numeric, strict=True))
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = ["num"] if numeric[j] else []
            if classes and classes[i][j]:
                cls.append(classes[i][j])
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# ---- charts (inline SVG) ------------------------------------------------------------------
def bar_chart(labels: Sequence[str], values: Sequence[float], width: int = 460, unit: str = "") -> str:
    """Horizontal bars with labels and values, as an inline SVG string."""
    if not labels:
        return '<p class="muted">nothing to show</p>'
    bar_h, gap, left, right = 20, 6, 150, 70
    height = len(labels) * (bar_h + gap) + gap
    top = max(max(values), 1e-12)
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = gap + i * (bar_h + gap)
        w = (width - left - right) * (value / top)
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{_e(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#2f5fb3"><title>{_e(label)}: {_e(_fmt(value))}{_e(unit)}</title></rect>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 14}">{_e(_fmt(value))}{_e(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(x: Sequence[float], y: Sequence[float], width: int = 460, height: int = 260) -> str:
    """Cumulative gains curve (share contacted vs share of churners caught) with the random line."""
    left, bottom, pad, right = 44, 34, 12, 24
    pw, ph = width - left - right, height - bottom - pad

    def px(v: float) -> float:
        return left + pw * min(max(v, 0.0), 1.0)

    def py(v: float) -> float:
        return pad + ph * (1 - min(max(v, 0.0), 1.0))

    pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip([0.0, *x], [0.0, *y], strict=True))
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{px(t):.1f}" y1="{py(0):.1f}" x2="{px(t):.1f}" y2="{py(1):.1f}" stroke="#e3e7ef"/>')
        parts.append(f'<line x1="{px(0):.1f}" y1="{py(t):.1f}" x2="{px(1):.1f}" y2="{py(t):.1f}" stroke="#e3e7ef"/>')
        parts.append(f'<text x="{px(t):.1f}" y="{height - bottom + 16}" text-anchor="middle">{t:.0%}</text>')
        parts.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.0%}</text>')
    parts.append(f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(1):.1f}" y2="{py(1):.1f}" stroke="#9aa3b5" stroke-dasharray="4 4"/>')
    parts.append(f'<polyline points="{pts}" fill="none" stroke="#2f5fb3" stroke-width="2"/>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">share of customers contacted</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---- gains normalisation -------------------------------------------------------------------
_SHARE_KEYS = ("cum_share", "share", "top_share", "fraction", "population_share", "top_fraction", "top_k_share", "k", "top")
_RECALL_KEYS = ("recall", "captured", "cum_recall", "gain", "share_of_churners", "cumulative_recall")


def normalise_gains(gains: Any) -> list[dict[str, float]]:
    """Accept the shapes a metrics file may use; return ``[{"share", "recall", "lift"}]``.

    Shapes: list of dicts (keys such as share/top_share/fraction and recall/captured/gain and
    lift), dict of parallel lists, ``{"gains": ...}``, or ``[[share, recall], ...]``. Shares
    given in percent (> 1) are scaled to fractions. Unknown shapes give an empty list.
    """
    if gains is None:
        return []
    if isinstance(gains, Mapping):
        for key in ("gains", "gains_curve", "gains_table"):
            if key in gains:
                return normalise_gains(gains[key])
        lists = {k: v for k, v in gains.items() if isinstance(v, list | tuple)}
        if lists:
            n = min(len(v) for v in lists.values())
            return normalise_gains([{k: v[i] for k, v in lists.items()} for i in range(n)])
        return []
    rows: list[dict[str, float]] = []
    for item in gains:
        if isinstance(item, Mapping):
            share = next((item[k] for k in _SHARE_KEYS if k in item), None)
            recall = next((item[k] for k in _RECALL_KEYS if k in item), None)
            lift = item.get("lift", item.get("cum_lift"))
        elif isinstance(item, list | tuple) and len(item) >= 2:
            share, recall, lift = item[0], item[1], (item[2] if len(item) > 2 else None)
        else:
            continue
        if share is None or _missing(share):
            continue
        share = float(share)
        share = share / 100.0 if share > 1 else share
        if recall is None and lift is not None:
            recall = float(lift) * share
        if recall is None:
            continue
        recall = float(recall)
        rows.append({"share": share, "recall": recall, "lift": float(lift) if lift is not None else (recall / share if share else float("nan"))})
    return sorted(rows, key=lambda r: r["share"])


# ---- sections ------------------------------------------------------------------------------
def _counts(summary_counts: Any, frame: pd.DataFrame, column: str) -> list[tuple[str, int]]:
    if isinstance(summary_counts, Mapping) and summary_counts:
        items = [(str(k), int(v)) for k, v in summary_counts.items()]
    elif column in frame.columns:
        items = [(str(k), int(v)) for k, v in frame[column].astype(str).value_counts().items()]
    else:
        items = []
    return sorted(items, key=lambda kv: (-kv[1], kv[0]))


def _tiers_section(summary: Mapping[str, Any], priority_list: pd.DataFrame) -> str:
    order = {"high": 0, "medium": 1, "low": 2}
    listed = dict(_counts(summary.get("tiers_listed"), priority_list, "risk_tier"))
    scored = dict(_counts(summary.get("tiers_scored"), pd.DataFrame(), "risk_tier"))
    tiers = sorted(set(listed) | set(scored), key=lambda t: (order.get(t, 9), t))
    rows = [[_e(t), _e(_fmt(scored.get(t), "int")), _e(_fmt(listed.get(t, 0), "int"))] for t in tiers]
    classes = [[f"tier-{t}" if t in order else "", "", ""] for t in tiers]
    table = _table(["tier", "scored", "on the list"], rows, [False, True, True], classes)
    return table + bar_chart(tiers, [listed.get(t, 0) for t in tiers])


def _segments_section(priority_list: pd.DataFrame) -> str:
    if priority_list.empty or "segment" not in priority_list.columns:
        return '<p class="muted">no customers on the list</p>'
    g = priority_list.groupby(priority_list["segment"].astype(str), sort=True).agg(
        customers=("customer_id", "size"),
        mean_probability=("churn_probability", "mean"),
        value_at_risk=("value_at_risk", "sum"),
    )
    g = g.sort_values(["customers"], ascending=False, kind="mergesort")
    rows = [
        [_e(seg), _e(_fmt(r.customers, "int")), _e(_fmt(r.mean_probability, "pct")), _e(_fmt(r.value_at_risk, "money"))]
        for seg, r in g.iterrows()
    ]
    return _table(["segment", "customers", "mean churn probability", "value at risk"], rows, [False, True, True, True])


def _reasons_section(summary: Mapping[str, Any], priority_list: pd.DataFrame) -> str:
    items = _counts(summary.get("reason_groups_listed"), priority_list, "reason_group_1")
    if not items:
        return '<p class="muted">no reason groups available</p>'
    return '<p class="muted">Group of each listed customer&rsquo;s strongest churn driver.</p>' + bar_chart(
        [k for k, _ in items], [v for _, v in items]
    )


def _gains_section(gains: Any) -> str:
    rows = normalise_gains(gains)
    if not rows:
        return '<p class="muted">no gains curve in the model metrics</p>'
    chart = line_chart([r["share"] for r in rows], [r["recall"] for r in rows])
    pick = [r for r in rows if any(abs(r["share"] - s) < 1e-9 for s in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5))] or rows[:: max(1, len(rows) // 6)]
    table = _table(
        ["top share contacted", "churners caught", "lift"],
        [[_e(_fmt(r["share"], "pct")), _e(_fmt(r["recall"], "pct")), _e(f"{r['lift']:.2f}" if not _missing(r["lift"]) else "")] for r in pick],
        [True, True, True],
    )
    return chart + table


def _drift_section(drift: pd.DataFrame | None) -> str:
    if drift is None or drift.empty:
        return '<p class="muted">no drift reference in the model</p>'
    severity = {"fail": 0, "missing": 0, "warn": 1, "ok": 2}
    d = drift.assign(
        _sev=drift["status"].map(severity).fillna(3), _psi=drift["psi"].astype(float).fillna(np.inf)
    ).sort_values(["_sev", "_psi", "feature"], ascending=[True, False, True], kind="mergesort")
    rows = [[_e(r.feature), _e("" if _missing(r.psi) else f"{float(r.psi):.4f}"), _e(r.status)] for r in d.itertuples()]
    classes = [["", "", f"status-{r.status}"] for r in d.itertuples()]
    counts = drift["status"].value_counts()
    note = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("fail", "warn", "ok") if counts.get(s, 0))
    return f'<p class="muted">{_e(note)} (PSI &ge; 0.1 warn, &ge; 0.25 fail by default)</p>' + _table(
        ["feature", "PSI", "status"], rows, [False, True, False], classes
    )


def _list_table(priority_list: pd.DataFrame, max_rows: int) -> str:
    shown = priority_list.head(max_rows)
    cols = list(shown.columns)
    num_class = ' class="num"'
    head = "".join(
        f'<th data-key="{_e(c)}" data-type="{"num" if c in _NUMERIC_LIST else "text"}"'
        f'{num_class if c in _NUMERIC_LIST else ""}>{_e(c.replace("_", " "))}</th>'
        for c in cols
    )
    body = []
    for rec in shown.itertuples(index=False, name=None):
        cells = []
        for c, v in zip(cols, rec, strict=True):
            if c in _NUMERIC_LIST:
                raw = "" if _missing(v) else repr(float(v))
                text = _fmt(v, "prob" if c == "churn_probability" else "money" if c == "value_at_risk" else "int")
                cells.append(f'<td class="num" data-v="{_e(raw)}">{_e(text)}</td>')
            else:
                text = "" if _missing(v) else str(v)
                cls = f' class="tier-{_e(text)}"' if c == "risk_tier" else ""
                cells.append(f'<td{cls} data-v="{_e(text)}">{_e(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="list"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def render_report(
    summary: Mapping[str, Any],
    priority_list: pd.DataFrame,
    gains: Any = None,
    drift: pd.DataFrame | None = None,
    *,
    max_rows: int = MAX_LIST_ROWS,
) -> str:
    """The report page as one HTML string (see module docstring).

    ``summary``: ``serving.priority.build_summary`` output (any extra keys are listed under
    "Run details"); ``gains``: the gains curve from the bundle metrics (see
    :func:`normalise_gains`); ``drift``: ``features.profile.population_stability`` output.
    """
    as_of = summary.get("as_of", "")
    title = f"Churn priority list \u2014 {as_of}" if as_of else "Churn priority list"
    model = " ".join(str(summary[k]) for k in ("model_name", "model_version") if summary.get(k) not in (None, ""))
    subtitle = f"Model {model}. " if model else ""
    subtitle += f"Capacity {_fmt(summary.get('capacity'), 'int') or 'unlimited'}; minimum probability {_fmt(summary.get('min_probability', 0), 'pct')}."
    cards = "".join(
        f'<div class="card"><div class="v">{_e(_fmt(summary.get(key), kind))}</div><div class="k">{_e(label)}</div></div>'
        for key, label, kind in _HEADLINE
        if key in summary
    )
    shown = min(len(priority_list), max_rows)
    note = (
        f'<p class="muted">Showing the first {shown:,} of {len(priority_list):,} rows; the full list is in priority_list.csv.</p>'
        if len(priority_list) > max_rows
        else ""
    )
    known = {k for k, _, _ in _HEADLINE} | {
        "as_of", "tiers_listed", "tiers_scored", "segments_listed", "reason_groups_listed", "drift", "n_listed"
    }
    extra = [(k, v) for k, v in sorted(summary.items()) if k not in known and not isinstance(v, Mapping | list)]
    details = (
        '<section id="details"><h2>Run details</h2>'
        + _table(["item", "value"], [[_e(k), _e(_fmt(v))] for k, v in extra], [False, False])
        + "</section>"
        if extra
        else ""
    )
    page = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=_e(title),
        subtitle=_e(subtitle),
        cards=cards,
        tiers=_tiers_section(summary, priority_list),
        segments=_segments_section(priority_list),
        reasons=_reasons_section(summary, priority_list),
        gains=_gains_section(gains),
        drift=_drift_section(drift),
        count_text=_e(f"{shown:,} customers"),
        list_note=note,
        list_table=_list_table(priority_list, max_rows),
        details=details,
    )
    return page
