"""Who is a customer at an as-of date, and who churned in the horizon after it.

Convention (tested): features see rows with ``time < T``; the label looks at
``T <= time < T + H days``, i.e. the horizon [T, T+H) in whole days, with day T itself the
first day of the horizon. A customer belongs to the snapshot at T when it had signed up before
T (or, without a signup column, had an event before T), had not churned before T, and has at
least ``min_tenure_days`` of tenure.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from churnflow.features.contracts import Tables

Definition = Literal["inactivity", "explicit", "label"]


def customer_start(tables: Tables, as_of: pd.Timestamp) -> pd.Series:
    """When each customer started: signup time, else first event before T (NaT = not yet)."""
    cu = tables.customers
    start = pd.Series(pd.NaT, index=pd.Index(cu["customer_id"]), dtype="datetime64[ns]")
    signup = pd.Series(cu["signup_time"].to_numpy(), index=start.index) if "signup_time" in cu else None
    every_signup = signup is not None and bool(signup.notna().all())  # then events cannot change it
    if tables.events is not None and len(tables.events) and not every_signup:
        before = tables.events.loc[tables.events["event_time"] < as_of]
        first = before.groupby("customer_id", sort=False)["event_time"].min()
        start = start.fillna(first.reindex(start.index))
    if signup is not None:
        start = signup.where(signup.notna(), start)
    return start


def active_customers(tables: Tables, as_of: pd.Timestamp, min_tenure_days: int = 0,
                     require_history: bool = True) -> pd.Index:
    """Customer ids that are customers at ``as_of`` (see module docstring for the rule)."""
    as_of = pd.Timestamp(as_of)
    cu = tables.customers
    ids = pd.Index(cu["customer_id"])
    keep = np.ones(len(cu), dtype=bool)
    if require_history:
        start = customer_start(tables, as_of).to_numpy()
        with np.errstate(invalid="ignore"):
            keep &= ~pd.isna(start) & (start < as_of.to_datetime64())
            if min_tenure_days:
                tenure = (as_of.to_datetime64() - start) / np.timedelta64(1, "D")
                keep &= np.nan_to_num(tenure, nan=-1) >= min_tenure_days
    if "churn_time" in cu:
        keep &= ~(cu["churn_time"] < as_of).to_numpy()
    return ids[keep]


def churn_labels(tables: Tables, as_of: pd.Timestamp, horizon_days: int, definition: Definition,
                 customer_ids: pd.Index) -> pd.Series:
    """0/1 churn label for ``customer_ids`` at ``as_of`` (int8, indexed by customer id)."""
    as_of = pd.Timestamp(as_of)
    horizon_end = as_of + pd.Timedelta(days=horizon_days)
    if definition == "label":
        flags = pd.Series(tables.customers["label"].to_numpy(), index=pd.Index(tables.customers["customer_id"]))
        return flags.reindex(customer_ids).astype("int8")
    if definition == "explicit":
        churn = pd.Series(tables.customers["churn_time"].to_numpy(), index=pd.Index(tables.customers["customer_id"]))
        churn = churn.reindex(customer_ids)
        return ((churn >= as_of) & (churn < horizon_end)).astype("int8")
    ev = tables.events
    assert ev is not None, "inactivity labels need events"
    in_window = ev.loc[(ev["event_time"] >= as_of) & (ev["event_time"] < horizon_end), "customer_id"]
    active = pd.Index(customer_ids).isin(pd.unique(in_window))
    return pd.Series((~active).astype("int8"), index=customer_ids)


def check_label_window(tables: Tables, as_of: pd.Timestamp, horizon_days: int) -> None:
    """Refuse labels whose horizon runs past the end of the data: they would be all churn."""
    end = pd.Timestamp(as_of) + pd.Timedelta(days=horizon_days - 1)
    if end > tables.end_date:
        raise ValueError(
            f"the label window of as-of {pd.Timestamp(as_of).date()} runs to {end.date()}, "
            f"after the end of the data ({tables.end_date.date()}); pick an as-of date at least "
            f"{horizon_days} days before the end, or shorten churn.horizon_days"
        )
