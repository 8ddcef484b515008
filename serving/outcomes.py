"""Report cards for published lists: did the outreach work, and is the model still right?

Once a list's horizon ``[T, T + H)`` has passed, the events (or churn dates) say who really
churned, and the contacts table says who was reached. A card (:func:`outcome_card`) answers:

* **Model quality** on the customers the outreach did *not* touch: the holdout and the unlisted
  customers, minus anyone contacted during the horizon. A contacted customer who stays may have
  stayed *because* of the call, so counting them would punish the model for the team's success.
  The holdout is a random ``share`` of the would-be-contacted customers, so each holdout customer
  stands for ``n_list / n_holdout`` of them (inverse-probability weight, Hajek form); without the
  weights the top of the ranking would be under-represented 10:1 and ROC-AUC, lift and calibration
  would describe a population nobody scores. Precision at the list size is the holdout's churn
  rate: what the list would have caught with no outreach at all.
* **Campaign effect** (intention to treat): churn rate of the customers assigned to the team
  (``status`` new / still on) minus the holdout's, with a 95 % Newcombe hybrid score interval
  (method 10 of Newcombe 1998: Wilson intervals of each rate, combined). Churn rates of a few
  percent in groups of tens to hundreds are where the normal (Wald) interval under-covers and can
  cross 0 or 1; Newcombe's interval keeps close to nominal coverage there and needs no iteration.
  Customers the team never reached stay in the contacted group: comparing only those reached
  would compare the reachable with everyone, which is not randomised.
* **Before the horizon closes**, :func:`expected_performance` estimates the same list metrics from
  the calibrated probabilities alone (confidence-based performance estimation): if the model is
  calibrated, a customer scored ``p`` is a churner with probability ``p``.

Point in time: a card reads only rows inside ``[T, T + H)`` (:func:`window_tables`), and realised
churn is :func:`features.labels.churn_labels`, the training label, so "churned" means the same
thing when the model learns and when it is judged. Everything here is pure except
:func:`write_outcome_once`, which writes ``outcome.json`` once and never again.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import brier_score_loss, roc_auc_score

from churnflow.features.contracts import Tables
from churnflow.features.errors import ChurnflowError
from churnflow.features.io import fsync_file, write_json
from churnflow.features.labels import Definition, churn_labels
from churnflow.serving.holdout import STATUS_HELD_EARLIER, STATUS_HOLDOUT
from churnflow.serving.priority import STATUS_NEW, STATUS_STILL_ON, STATUS_SUPPRESSED

OUTCOME_FILE = "outcome.json"
GROUP_CONTACT = "contact"
GROUP_HOLDOUT = "holdout"
GROUP_SUPPRESSED = "suppressed"
GROUP_UNLISTED = "unlisted"
GROUP_HELD_EARLIER = "held earlier"
"""In the control group of an earlier list still open: not contacted, not part of this list's draw."""
GROUPS = (GROUP_CONTACT, GROUP_HOLDOUT, GROUP_HELD_EARLIER, GROUP_SUPPRESSED, GROUP_UNLISTED)
UNTOUCHED = (GROUP_HOLDOUT, GROUP_HELD_EARLIER, GROUP_UNLISTED)

MIN_GROUP_CUSTOMERS = 30
MIN_CHURNERS = 10
"""Below these (per group; churners in both groups together) the effect is not reported."""
MAX_HALF_WIDTH = 0.15
"""An effect interval wider than +-15 percentage points says nothing a team can act on."""
ECE_BINS = 10


class OutcomeError(ChurnflowError):
    """A report card was asked for a list it cannot judge (horizon still open, no labels)."""


# ---- the window ------------------------------------------------------------------------------
def horizon_end(as_of: pd.Timestamp, horizon_days: int) -> pd.Timestamp:
    """First day after the horizon: the window is ``[as_of, horizon_end)``."""
    return pd.Timestamp(as_of).normalize() + pd.Timedelta(days=horizon_days)


def horizon_closed(as_of: pd.Timestamp, horizon_days: int, end_date: pd.Timestamp) -> bool:
    """True when the data cover the list's whole horizon (its last day is on or before the end)."""
    return horizon_end(as_of, horizon_days) - pd.Timedelta(days=1) <= pd.Timestamp(end_date)


def window_tables(tables: Tables, as_of: pd.Timestamp, horizon_days: int) -> Tables:
    """Events and contacts inside ``[as_of, as_of + H)`` only: nothing else can reach a card."""
    t, end = pd.Timestamp(as_of), horizon_end(as_of, horizon_days)

    def inside(frame: pd.DataFrame | None, column: str) -> pd.DataFrame | None:
        if frame is None:
            return None
        times = frame[column]
        return frame.loc[((times >= t) & (times < end)).to_numpy()]

    return Tables(customers=tables.customers, events=inside(tables.events, "event_time"),
                  contacts=inside(tables.contacts, "contact_time"), end_date=tables.end_date,
                  dropped_rows=tables.dropped_rows)


def realised_churn(customer_id: pd.Series, window: Tables, as_of: pd.Timestamp, horizon_days: int,
                   definition: Definition) -> np.ndarray:
    """0/1 churn in the horizon for each customer, by the training label's own definition."""
    if definition == "label":
        raise OutcomeError(
            "churn.definition = 'label' reads a fixed churn flag, which says nothing about what "
            "happened after a list's date; outcome cards need 'inactivity' or 'explicit' churn"
        )
    labels = churn_labels(window, as_of, horizon_days, definition, pd.Index(customer_id))
    return labels.fillna(0).to_numpy(np.int8)


def contacted_in_window(customer_id: pd.Series, window: Tables) -> np.ndarray:
    """True for customers with a contact in the window (``window`` from :func:`window_tables`)."""
    if window.contacts is None or window.contacts.empty:
        return np.zeros(len(customer_id), dtype=bool)
    return pd.Series(customer_id).isin(pd.unique(window.contacts["customer_id"])).to_numpy()


def realised(customer_id: pd.Series, tables: Tables, as_of: pd.Timestamp, horizon_days: int,
             definition: Definition) -> tuple[np.ndarray, np.ndarray]:
    """Churn in the horizon (0/1) and a contact during it, per customer: each customer's answer
    reads only that customer's rows inside ``[T, T + H)``, so partitions of customers give it too."""
    window = window_tables(tables, as_of, horizon_days)
    return (realised_churn(customer_id, window, as_of, horizon_days, definition),
            contacted_in_window(customer_id, window))


class OutcomeSource(Protocol):
    """Today's data as a card reads them when they are not one table (the Dask engine's partitions)."""

    end_date: pd.Timestamp

    def realised(self, customer_id: pd.Series, as_of: pd.Timestamp, horizon_days: int,
                 definition: Definition) -> tuple[np.ndarray, np.ndarray]:
        """:func:`realised` for these customers."""
        ...


def outcome_groups(status: pd.Series) -> np.ndarray:
    """One of :data:`GROUPS` per customer, from the ``status`` column of the scores.

    Decided once per distinct status, then looked up per customer: the weekly summary asks this
    of every scored customer, where comparing texts row by row took ~100 bytes a customer
    (340 MB at 4M customers) on the client."""
    codes, statuses = pd.factorize(pd.Series(status), use_na_sentinel=True)
    s = pd.Series(statuses, dtype=object).to_numpy()
    groups = np.select(
        [np.isin(s, [STATUS_NEW, STATUS_STILL_ON]), s == STATUS_HOLDOUT, s == STATUS_HELD_EARLIER,
         s == STATUS_SUPPRESSED],
        [GROUP_CONTACT, GROUP_HOLDOUT, GROUP_HELD_EARLIER, GROUP_SUPPRESSED],
        default=GROUP_UNLISTED,
    ).astype(object)
    return np.append(groups, GROUP_UNLISTED).astype(object)[codes]  # code -1 (missing): the last, unlisted


# ---- model quality on the untouched customers ------------------------------------------------
def weighted_ece(probability: np.ndarray, label: np.ndarray, weight: np.ndarray,
                 n_bins: int = ECE_BINS) -> float:
    """:func:`training.calibration.expected_calibration_error` with sample weights.

    Same equal-width bins and formula (equal to it for unit weights, tested); here because the
    training version takes no weights. Fold into it when that module gains ``sample_weight``.
    """
    p, y, w = (np.asarray(a, dtype=np.float64) for a in (probability, label, weight))
    if not len(p) or w.sum() <= 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    mass = np.bincount(bins, weights=w, minlength=n_bins)
    gap = np.bincount(bins, weights=w * y, minlength=n_bins) - np.bincount(bins, weights=w * p, minlength=n_bins)
    return float(np.abs(gap).sum() / mass.sum())


def calibration_by_decile(probability: np.ndarray, label: np.ndarray, weight: np.ndarray) -> list[dict[str, float]]:
    """Predicted vs observed churn rate in ten equal-count bins of the probability (weighted)."""
    p, y, w = (np.asarray(a, dtype=np.float64) for a in (probability, label, weight))
    if not len(p):
        return []
    order = np.argsort(p, kind="stable")
    rows = []
    for i, idx in enumerate(np.array_split(order, 10), start=1):
        if len(idx) == 0 or w[idx].sum() <= 0:
            continue
        rows.append({"decile": i, "n": int(len(idx)),
                     "predicted": float(np.average(p[idx], weights=w[idx])),
                     "observed": float(np.average(y[idx], weights=w[idx]))})
    return rows


def model_quality(churned: np.ndarray, probability: np.ndarray, group: np.ndarray,
                  contacted: np.ndarray) -> dict[str, Any]:
    """The model's ranking and calibration on customers the outreach did not touch.

    Untouched = holdout, unlisted or held by an earlier list, and no contact during the horizon.
    Holdout customers are weighted ``n_list / n_holdout`` (see the module docstring). ``list_*`` metrics describe the
    would-be-contacted list (contact + holdout) and need a holdout; the others need both classes.
    """
    y = np.asarray(churned, dtype=np.float64)
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    untouched = np.isin(group, UNTOUCHED) & ~np.asarray(contacted, dtype=bool)
    holdout = untouched & (group == GROUP_HOLDOUT)
    n_list = int(np.isin(group, [GROUP_CONTACT, GROUP_HOLDOUT]).sum())
    weight = np.where(holdout, n_list / max(int(holdout.sum()), 1), 1.0)
    y_u, p_u, w_u = y[untouched], p[untouched], weight[untouched]
    two_classes = len(np.unique(y_u)) == 2
    out: dict[str, Any] = {
        "n_customers": int(untouched.sum()),
        "n_holdout": int(holdout.sum()),
        "n_churners": int(y_u.sum()),
        "churn_rate": float(np.average(y_u, weights=w_u)) if len(y_u) else None,
        "predicted_churn_rate": float(np.average(p_u, weights=w_u)) if len(y_u) else None,
        "roc_auc": float(roc_auc_score(y_u, p_u, sample_weight=w_u)) if two_classes else None,
        "brier": float(brier_score_loss(y_u, p_u, sample_weight=w_u)) if len(y_u) else None,
        "ece": weighted_ece(p_u, y_u, w_u) if len(y_u) else None,
        "calibration_by_decile": calibration_by_decile(p_u, y_u, w_u),
        "list_size": n_list,
        "list_precision": None, "list_recall": None, "list_lift": None,
    }
    if holdout.any() and out["churn_rate"]:
        precision = float(y[holdout].mean())
        list_churners = precision * n_list
        other_churners = float(y[untouched & ~holdout].sum())
        out["list_precision"] = precision
        out["list_recall"] = list_churners / (list_churners + other_churners) if list_churners + other_churners else None
        out["list_lift"] = precision / out["churn_rate"]
    return out


# ---- campaign effect ---------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy)."""
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``x1/n1 - x2/n2`` (Newcombe 1998, method 10)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def _pp(x: float) -> str:
    return f"{abs(x) * 100:.1f} percentage points"


def campaign_effect(churned: np.ndarray, group: np.ndarray, contacted: np.ndarray,
                    expected_value: np.ndarray) -> dict[str, Any]:
    """Churn of the customers assigned to the team against the holdout, with a 95 % interval.

    ``expected_value``: each customer's value if they stay (value at risk / probability); value
    retained = churn prevented x the contacted customers' total expected value. When a group is
    too small for a conclusion, ``difference`` and the value are None and ``verdict`` says why.
    """
    y = np.asarray(churned, dtype=np.int64)
    treat, hold = group == GROUP_CONTACT, group == GROUP_HOLDOUT
    n_t, n_h, x_t, x_h = int(treat.sum()), int(hold.sum()), int(y[treat].sum()), int(y[hold].sum())
    out: dict[str, Any] = {
        "n_contact": n_t, "n_holdout": n_h, "churners_contact": x_t, "churners_holdout": x_h,
        "churn_rate_contact": x_t / n_t if n_t else None, "churn_rate_holdout": x_h / n_h if n_h else None,
        "reached_share": float(np.asarray(contacted)[treat].mean()) if n_t else None,
        "holdout_contacted": int(np.asarray(contacted)[hold].sum()),
        "interval_method": "Newcombe hybrid score (Wilson), 95 %",
        "difference": None, "difference_ci95": None, "value_retained": None, "value_retained_ci95": None,
        "conclusive": False,
    }
    if n_h < MIN_GROUP_CUSTOMERS or n_t < MIN_GROUP_CUSTOMERS or x_t + x_h < MIN_CHURNERS:
        out["verdict"] = (
            f"Too small to measure: {n_h} holdout and {n_t} contacted customers with {x_t + x_h} "
            f"churners in all (need at least {MIN_GROUP_CUSTOMERS} per group and {MIN_CHURNERS} "
            "churners). Raise serving.holdout_share or judge several lists together."
        )
        return out
    lo, hi = newcombe_interval(x_t, n_t, x_h, n_h)
    if (hi - lo) / 2 > MAX_HALF_WIDTH:
        out["verdict"] = (f"Too uncertain to conclude: the 95 % interval of the difference spans "
                          f"{(hi - lo) * 100:.0f} percentage points. Raise serving.holdout_share.")
        return out
    diff = x_t / n_t - x_h / n_h
    value = float(np.asarray(expected_value, dtype=np.float64)[treat].sum())
    out.update(difference=diff, difference_ci95=[lo, hi], conclusive=True,
               value_retained=-diff * value, value_retained_ci95=[-hi * value, -lo * value])
    if hi < 0:
        out["verdict"] = (f"The outreach reduced churn by {_pp(diff)} (95 % interval "
                          f"{-hi * 100:.1f} to {-lo * 100:.1f}).")
    elif lo > 0:
        out["verdict"] = f"Contacted customers churned more than the holdout, by {_pp(diff)}: review the offer."
    else:
        out["verdict"] = (f"No effect detectable: the difference of {diff * 100:+.1f} percentage points "
                          f"is within the 95 % interval {lo * 100:+.1f} to {hi * 100:+.1f}.")
    return out


# ---- before the horizon closes -----------------------------------------------------------------
def expected_roc_auc(probability: np.ndarray) -> float:
    """ROC-AUC expected if the probabilities are right: each customer is a churner with weight
    ``p`` and a stayer with weight ``1 - p`` (the CBPE estimate).

    The weighted pairwise form, on the sorted distinct scores: a churner-weight at score ``v``
    beats the stayer-weight below ``v`` and ties half of it at ``v``. Equal to sklearn's weighted
    ``roc_auc_score`` on the doubled sample, at a fraction of its memory and time (it runs on
    every scored customer of every weekly list: 8M customers would take gigabytes there).
    """
    p = np.sort(np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0))
    if len(p) < 2 or p.sum() <= 0 or (1 - p).sum() <= 0:
        return float("nan")
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    churners = np.add.reduceat(p, starts)
    stayers = np.diff(np.r_[starts, len(p)]) - churners
    below = np.cumsum(stayers) - stayers
    return float(np.sum(churners * (below + 0.5 * stayers)) / (churners.sum() * stayers.sum()))


def expected_performance(probability: np.ndarray, group: np.ndarray) -> dict[str, Any]:
    """Label-free estimate of a list's quality from calibrated probabilities alone.

    Assumes the model is still calibrated and nobody is contacted; ``expected_ece`` is the
    sampling noise a calibrated model would show with these bin sizes (a realised ECE well above
    it means calibration has drifted). Replaced by the realised card when the horizon closes.
    """
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    on_list = np.isin(group, [GROUP_CONTACT, GROUP_HOLDOUT])
    bins = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    spread = np.sqrt(np.bincount(bins, weights=p * (1 - p), minlength=ECE_BINS))
    rate = float(p.mean()) if len(p) else float("nan")
    precision = float(p[on_list].mean()) if on_list.any() else None
    return {
        "estimate": True,
        "note": "estimated from the calibrated probabilities alone; not yet observed",
        "churn_rate": rate,
        "list_size": int(on_list.sum()),
        "list_precision": precision,
        "list_recall": float(p[on_list].sum() / p.sum()) if on_list.any() and p.sum() else None,
        "list_lift": precision / rate if precision is not None and rate else None,
        "roc_auc": expected_roc_auc(p),
        "brier": float(np.mean(p * (1 - p))) if len(p) else None,
        "expected_ece": float(math.sqrt(2 / math.pi) * spread.sum() / len(p)) if len(p) else None,
    }


# ---- the card -----------------------------------------------------------------------------------
def _as_of(scores: pd.DataFrame) -> pd.Timestamp:
    days = pd.to_datetime(scores["as_of"]).dt.normalize().unique()
    if len(days) != 1:
        raise OutcomeError(f"a scores table should hold one as-of date, found {len(days)}")
    return pd.Timestamp(days[0])


def expected_value_of(scores: pd.DataFrame) -> np.ndarray:
    """Value if the customer stays: value at risk / probability (0 where the probability is 0)."""
    p = scores["churn_probability"].to_numpy(np.float64)
    var = scores["value_at_risk"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, var / p, 0.0)


def outcome_card(scores: pd.DataFrame, tables: Tables | OutcomeSource, horizon_days: int,
                 definition: Definition) -> dict[str, Any]:
    """The JSON-ready report card of one published list whose horizon has passed.

    ``scores``: the list's ``scores.parquet`` with a ``status`` column (the list's status for
    listed customers, anything else for unlisted ones). ``tables``: today's canonical tables (or
    an :class:`OutcomeSource` over partitions of them); only rows inside the horizon are read.
    """
    as_of = _as_of(scores)
    if not horizon_closed(as_of, horizon_days, tables.end_date):
        raise OutcomeError(
            f"the horizon of the list of {as_of.date()} runs to "
            f"{(horizon_end(as_of, horizon_days) - pd.Timedelta(days=1)).date()}, after the end of "
            f"the data ({pd.Timestamp(tables.end_date).date()}); its card can be made after that date"
        )
    ids = scores["customer_id"]
    churned, contacted = (realised(ids, tables, as_of, horizon_days, definition) if isinstance(tables, Tables)
                          else tables.realised(ids, as_of, horizon_days, definition))
    group = outcome_groups(scores["status"] if "status" in scores.columns else pd.Series([""] * len(scores)))
    p = scores["churn_probability"].to_numpy(np.float64)
    versions = scores["model_version"].astype(str).unique() if "model_version" in scores.columns else []
    return {
        "as_of": as_of.date().isoformat(),
        "horizon_days": int(horizon_days),
        "horizon_end": horizon_end(as_of, horizon_days).date().isoformat(),
        "horizon_closed": True,
        "churn_definition": definition,
        "model_version": str(versions[0]) if len(versions) == 1 else None,
        "n_scored": len(scores),
        "groups": {g: int((group == g).sum()) for g in GROUPS},
        "realised_churn_rate": float(churned.mean()) if len(churned) else None,
        "predicted_churn_rate": float(p.mean()) if len(p) else None,
        "model_quality": model_quality(churned, p, group, contacted),
        "campaign": campaign_effect(churned, group, contacted, expected_value_of(scores)),
        "estimate_before_horizon": expected_performance(p, group),
    }


def estimate_card(scores: pd.DataFrame) -> dict[str, Any]:
    """What is known of a list whose horizon is still open: the label-free estimate only."""
    status = scores["status"] if "status" in scores.columns else pd.Series([""] * len(scores))
    return {"as_of": _as_of(scores).date().isoformat(), "horizon_closed": False,
            "estimate_before_horizon": expected_performance(scores["churn_probability"].to_numpy(np.float64),
                                                            outcome_groups(status))}


def outcome_history(cards: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per closed list, oldest first: the report's history plots read this table."""
    rows = [{
        "as_of": pd.Timestamp(card["as_of"]),
        "model_version": card.get("model_version"),
        "predicted_churn_rate": card.get("predicted_churn_rate"),
        "realised_churn_rate": card.get("realised_churn_rate"),
        "roc_auc": card["model_quality"].get("roc_auc"),
        "list_lift": card["model_quality"].get("list_lift"),
        "effect": card["campaign"].get("difference"),
        "effect_low": (card["campaign"].get("difference_ci95") or [None, None])[0],
        "effect_high": (card["campaign"].get("difference_ci95") or [None, None])[1],
        "verdict": card["campaign"].get("verdict"),
    } for card in cards]
    frame = pd.DataFrame(rows, columns=["as_of", "model_version", "predicted_churn_rate", "realised_churn_rate",
                                        "roc_auc", "list_lift", "effect", "effect_low", "effect_high", "verdict"])
    return frame.sort_values("as_of", kind="mergesort", ignore_index=True)


# ---- decay alarm ----------------------------------------------------------------------------------
def decay_alarm(realised_roc_auc: Mapping[str, float | None], test_roc_auc: float, max_drop: float,
                n_recent: int = 3) -> dict[str, Any]:
    """Has the model's realised ranking quality fallen more than ``max_drop`` below its test value?

    ``realised_roc_auc``: as-of date (ISO) -> the card's ``model_quality.roc_auc`` for the lists of
    one model version. The mean of the ``n_recent`` latest lists is compared, so one noisy list
    does not ring the alarm.
    """
    recent = [(day, float(v)) for day, v in sorted(realised_roc_auc.items())
              if v is not None and math.isfinite(float(v))][-n_recent:]
    out: dict[str, Any] = {"alarm": False, "test_roc_auc": float(test_roc_auc), "max_drop": float(max_drop),
                           "lists": [day for day, _ in recent], "recent_roc_auc": None, "drop": None}
    if not recent:
        out["message"] = "No list with a closed horizon yet: the model's realised quality is not known."
        return out
    mean = float(np.mean([v for _, v in recent]))
    drop = float(test_roc_auc) - mean
    out.update(recent_roc_auc=mean, drop=drop, alarm=drop > max_drop)
    what = f"ROC-AUC of the last {len(recent)} closed list(s) is {mean:.3f} against {test_roc_auc:.3f} on the test data"
    out["message"] = (
        f"Model decay: realised {what}, {drop:.3f} lower (alarm at {max_drop:.3f}). Retrain on recent "
        "data (churnflow train), check the drift section of the report, and compare the challenger "
        "with the champion before promoting it."
        if out["alarm"] else f"No decay: realised {what} (alarm at a drop of {max_drop:.3f})."
    )
    return out


# ---- MLflow and the file --------------------------------------------------------------------------
def mlflow_step(as_of: str | pd.Timestamp) -> int:
    """The as-of date as an MLflow step: days since 1970-01-01 (linear in time, sortable)."""
    return int((pd.Timestamp(as_of).normalize() - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1))


def realised_metrics(card: Mapping[str, Any]) -> dict[str, float]:
    """Flat numeric metrics of a card for ``MlflowClient.log_metric`` (None values left out)."""
    quality, campaign = card["model_quality"], card["campaign"]
    pairs = {f"realised_{k}": quality.get(k) for k in
             ("roc_auc", "brier", "ece", "churn_rate", "list_precision", "list_recall", "list_lift")}
    pairs |= {"realised_campaign_difference": campaign.get("difference"),
              "realised_value_retained": campaign.get("value_retained")}
    return {k: float(v) for k, v in pairs.items() if v is not None and math.isfinite(float(v))}


def write_outcome_once(folder: Path, record: Mapping[str, Any]) -> bool:
    """Write ``folder/outcome.json`` unless it exists; True when written.

    The record is written to a temporary file, flushed to disk, then hard-linked into place:
    ``link`` fails when the target exists, so the check and the write are one atomic step (two
    concurrent runs cannot both write, and a reader never sees half a file). An existing card is
    never touched: it records what was known when the horizon closed.
    """
    folder = Path(folder)
    target = folder / OUTCOME_FILE
    if target.exists():
        return False
    tmp = folder / f".{OUTCOME_FILE}.tmp-{os.getpid()}"
    try:
        write_json(tmp, record)
        fsync_file(tmp)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@dataclass(frozen=True)
class Outcomes:
    """What the published lists are known to have achieved, oldest first."""

    cards: list[dict[str, Any]] = field(default_factory=list)
    """Closed lists: their ``outcome.json``."""
    estimates: list[dict[str, Any]] = field(default_factory=list)
    """Open lists: ``{"as_of", "horizon_closed": False, "estimate_before_horizon"}``."""
    written: list[str] = field(default_factory=list)
    """As-of dates whose card was written by this call."""
    alarm: dict[str, Any] = field(default_factory=dict)
    """:func:`serving.outcomes.latest_version_alarm` over the closed lists."""

    def known_at(self, day: pd.Timestamp, max_drop: float) -> Outcomes:
        """What was known on ``day``: cards whose horizon ended by then; lists before ``day``
        whose horizon was still open show their estimate. A rerun of a past date's list (and
        its report) therefore does not depend on when it is run."""
        iso = pd.Timestamp(day).date().isoformat()
        cards = [c for c in self.cards if c["horizon_end"] <= iso]
        later = [{"as_of": c["as_of"], "horizon_closed": False, "estimate_before_horizon": c.get("estimate_before_horizon")}
                 for c in self.cards if c["as_of"] < iso < c["horizon_end"]]
        estimates = sorted([*later, *(e for e in self.estimates if e["as_of"] < iso)], key=lambda e: e["as_of"])
        return Outcomes(cards=cards, estimates=estimates, written=list(self.written),
                        alarm=latest_version_alarm(cards, max_drop))


# ---- every published list -------------------------------------------------------------------------
def list_card(scores: pd.DataFrame, summary: Mapping[str, Any], tables: Tables | OutcomeSource, horizon_days: int,
              definition: Definition) -> dict[str, Any]:
    """:func:`outcome_card` of one published list, with what its ``summary.json`` recorded then:
    the model's test ROC-AUC (what the decay alarm compares with) and the control-group share."""
    card = outcome_card(scores, tables, int(summary.get("horizon_days", horizon_days)), definition)
    test = (summary.get("test_metrics") or {}).get("roc_auc")
    card["model_test_roc_auc"] = float(test) if test is not None else None
    card["holdout_share"] = summary.get("holdout_share")
    if card["model_version"] is None and summary.get("model_version") is not None:
        card["model_version"] = str(summary["model_version"])
    return card


def latest_version_alarm(cards: Sequence[Mapping[str, Any]], max_drop: float, n_recent: int = 3) -> dict[str, Any]:
    """:func:`decay_alarm` for the model version of the most recent closed list.

    Earlier versions' lists say nothing about the model scoring now; a version without a test
    ROC-AUC on record cannot be judged (no alarm, said so).
    """
    dated = sorted((c for c in cards if c.get("horizon_closed")), key=lambda c: c["as_of"])
    if not dated:
        return {"alarm": False, "model_version": None, "lists": [],
                "message": "No list with a closed horizon yet: the model's realised quality is not known."}
    version = dated[-1].get("model_version")
    own = [c for c in dated if c.get("model_version") == version]
    test = next((c["model_test_roc_auc"] for c in reversed(own) if c.get("model_test_roc_auc") is not None), None)
    if test is None:
        return {"alarm": False, "model_version": version, "lists": [c["as_of"] for c in own],
                "message": f"Model v{version} has no test ROC-AUC on record: its decay cannot be judged."}
    realised = {c["as_of"]: c["model_quality"].get("roc_auc") for c in own}
    return decay_alarm(realised, float(test), max_drop, n_recent) | {"model_version": version}
