"""A randomised control group on every list: who the team would contact but does not.

Without a control group nobody can tell, weeks later, whether the calls worked: the contacted
customers churn less than average because the team's effort helped, or just because nothing
happened to them. So a share of the customers each list would contact (``serving.holdout_share``)
is held back at random. They keep ``status = "holdout"`` in the outputs, have no rank and no
action, and the list the team works from shrinks by that share: holdout customers are drawn
*from* the would-be-contacted set and not replaced by the next customers below the cut. Refilling
would add customers who were never part of the randomisation (lower risk, lower value), and
"contacted vs holdout" would then compare different populations. The cost of learning is
therefore ``holdout_share`` of the week's capacity, which is what a retention team expects from a
control group.

The draw is a keyed hash, not a random generator: ``blake2b`` keyed by the as-of date and a seed,
applied to the customer id, gives each customer a uniform number that depends on nothing else.
A rerun of the same date, a different partitioning of the scoring, or a reordering of the rows
holds back the same people, and no stored state is needed.

Stratification: the would-be-contacted customers are sorted by stratum (risk tier, segment), then
by their draw, and held back by *systematic sampling* with a keyed random start: position ``i``
is held back when ``floor(start + (i + 1) * share)`` steps past ``floor(start + i * share)``.
Every stratum of ``n`` customers then holds back ``floor(share * n)`` or ``ceil(share * n)``, the
total is within one of ``share * N``, and every customer's chance of being held back is exactly
``share`` (the random start makes the rounding fair). The alternatives are worse: ``u < share``
per customer gives random stratum counts (a stratum of 40 may hold back 0 or 9), and "the
``ceil(share * n)`` smallest draws" over-samples small strata (a stratum of one customer would
always be held back), which biases a pooled contacted-vs-holdout comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime

import numpy as np
import pandas as pd

from serving.priority import STATUS_SUPPRESSED

STATUS_HOLDOUT = "holdout"
HOLDOUT_ACTION = "none: control group, do not contact"
STRATA = ("risk_tier", "segment")
"""Columns that define the strata of the draw (missing columns are ignored)."""

_TWO_TO_53 = float(2**53)


def _key(as_of: date | datetime | pd.Timestamp, seed: int) -> bytes:
    return f"churnflow-holdout|{pd.Timestamp(as_of).date().isoformat()}|{int(seed)}".encode()


def _uniform(message: bytes, key: bytes) -> float:
    """A uniform number in [0, 1) from 53 bits of a keyed blake2b digest."""
    digest = hashlib.blake2b(message, digest_size=8, key=key).digest()
    return (int.from_bytes(digest, "big") >> 11) / _TWO_TO_53


def holdout_draw(
    customer_id: Sequence[object] | pd.Series | np.ndarray,
    as_of: date | datetime | pd.Timestamp,
    seed: int = 0,
) -> np.ndarray:
    """Each customer's uniform draw in [0, 1) for the list of ``as_of``.

    Depends only on (as-of date, seed, customer id as text), so ``123`` and ``"123"`` draw alike
    and a customer's draw does not change with who else is on the list.
    """
    key = _key(as_of, seed)
    return np.fromiter(
        (_uniform(str(c).encode(), key) for c in customer_id), dtype=np.float64, count=len(customer_id)
    )


def would_be_contacted(priority_list: pd.DataFrame) -> np.ndarray:
    """Rows the team would contact without a control group: ranked and not suppressed.

    (In ``suppression = "flag"`` mode suppressed rows keep a rank, but the agent decides on them,
    so they are not randomised.)
    """
    ranked = priority_list["rank"].notna().to_numpy()
    suppressed = priority_list["status"].astype(object).eq(STATUS_SUPPRESSED).to_numpy()
    return ranked & ~suppressed


def systematic_selection(n: int, share: float, start: float) -> np.ndarray:
    """Positions 0..n-1 selected by systematic sampling with interval ``1 / share``.

    Any run of ``m`` consecutive positions holds ``floor(share * m)`` or ``ceil(share * m)``
    selected ones; with ``start`` uniform in [0, 1) each position is selected with probability
    ``share``.
    """
    i = np.arange(n, dtype=np.float64)
    return np.floor(start + (i + 1) * share) - np.floor(start + i * share) >= 1


def assign_holdout(
    priority_list: pd.DataFrame,
    as_of: date | datetime | pd.Timestamp,
    share: float,
    seed: int = 0,
) -> pd.DataFrame:
    """Hold back ``share`` of the would-be-contacted customers of a ranked list, by stratum.

    ``priority_list``: the output of :func:`serving.priority.build_priority_list` (needs
    ``customer_id``, ``rank`` and ``status``; ``risk_tier`` and ``segment`` define the strata).
    Held-back rows get ``status = "holdout"``, no rank, action ``"none: control group, do not
    contact"`` and channel ``"none"``, and move after the other rows; the remaining ranked rows
    are renumbered 1..k so the team's list has no gaps. ``share = 0`` returns the list unchanged.
    See the module docstring for the design (why the list shrinks, why systematic sampling).
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout share must be in [0, 1), got {share}")
    out = priority_list.copy()
    frame = would_be_contacted(out)
    if share == 0.0 or not frame.any():
        return out
    rows = out.loc[frame]
    order = pd.DataFrame(
        {col: rows[col].astype(str).to_numpy() for col in STRATA if col in rows.columns}
        | {"_draw": holdout_draw(rows["customer_id"].to_numpy(), as_of, seed),
           "_id": rows["customer_id"].astype(str).to_numpy()}
    ).sort_values([*(c for c in STRATA if c in rows.columns), "_draw", "_id"], kind="mergesort")
    start = _uniform(b"systematic start", _key(as_of, seed))
    chosen = order.index.to_numpy()[systematic_selection(len(order), share, start)]
    held = np.zeros(len(out), dtype=bool)
    held[np.flatnonzero(frame)[chosen]] = True

    out["status"] = out["status"].astype(object)
    out.loc[held, "status"] = STATUS_HOLDOUT
    for col, value in (("recommended_action", HOLDOUT_ACTION), ("channel", "none")):
        if col in out.columns:
            out.loc[held, col] = value
    out = pd.concat([out[~held], out[held]])
    ranked = out["rank"].notna().to_numpy() & ~out["status"].eq(STATUS_HOLDOUT).to_numpy()
    rank = pd.array(np.full(len(out), pd.NA), dtype="Int64")
    rank[ranked] = np.arange(1, int(ranked.sum()) + 1)
    out["rank"] = rank
    return out.reset_index(drop=True)
