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

A holdout customer stays uncontacted for the whole horizon of the list that drew them: a later
list that contacts them would blur the comparison. :func:`open_holdout_ids` collects them from
the lists whose horizon is still open, and :func:`assign_holdout` marks them
``"holdout, earlier list"`` (not contacted, not part of this list's draw or its effect).

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
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime

import numpy as np
import pandas as pd

from churnflow.serving.priority import STATUS_HELD_EARLIER, STATUS_HOLDOUT, STATUS_SUPPRESSED

__all__ = ["STATUS_HELD_EARLIER", "STATUS_HOLDOUT", "assign_holdout", "holdout_draw", "holdout_summary",
           "open_holdout_ids"]
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


def open_holdout_ids(
    earlier_holdouts: Mapping[str, Iterable[object]],
    as_of: date | datetime | pd.Timestamp,
    horizon_days: int,
) -> set[str]:
    """Customers held back by a list whose horizon ``[T', T' + H)`` still covers ``as_of``.

    ``earlier_holdouts``: as-of date (ISO) of each published list -> its holdout customer ids.
    Ids are returned as text (the draw's convention), so ``123`` and ``"123"`` match.
    """
    t = pd.Timestamp(as_of).normalize()
    return {
        str(c)
        for day, ids in earlier_holdouts.items()
        if pd.Timestamp(day) < t < pd.Timestamp(day) + pd.Timedelta(days=horizon_days)
        for c in ids
    }


def assign_holdout(
    priority_list: pd.DataFrame,
    as_of: date | datetime | pd.Timestamp,
    share: float,
    seed: int = 0,
    open_holdouts: Collection[str] = frozenset(),
) -> pd.DataFrame:
    """Hold back ``share`` of the would-be-contacted customers of a ranked list, by stratum.

    ``priority_list``: the output of :func:`serving.priority.build_priority_list` (needs
    ``customer_id``, ``rank`` and ``status``; ``risk_tier`` and ``segment`` define the strata).
    Held-back rows get ``status = "holdout"``, no rank, action ``"none: control group, do not
    contact"`` and channel ``"none"``, and move after the other rows; the remaining ranked rows
    are renumbered 1..k so the team's list has no gaps. ``open_holdouts`` (from
    :func:`open_holdout_ids`, ids as text) are marked ``"holdout, earlier list"`` the same way
    and take no part in the draw. ``share = 0`` and no open holdouts return the list unchanged.
    See the module docstring for the design (why the list shrinks, why systematic sampling).
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout share must be in [0, 1), got {share}")
    out = priority_list.copy()
    earlier = would_be_contacted(out) & out["customer_id"].astype(str).isin(list(open_holdouts)).to_numpy()
    frame = would_be_contacted(out) & ~earlier
    if (share == 0.0 or not frame.any()) and not earlier.any():
        return out
    rows = out.loc[frame]
    order = pd.DataFrame(
        {col: rows[col].astype(str).to_numpy() for col in STRATA if col in rows.columns}
        | {"_draw": holdout_draw(rows["customer_id"].to_numpy(), as_of, seed),
           "_id": rows["customer_id"].astype(str).to_numpy()}
    ).sort_values([*(c for c in STRATA if c in rows.columns), "_draw", "_id"], kind="mergesort")
    start = _uniform(b"systematic start", _key(as_of, seed))
    chosen = order.index.to_numpy()[systematic_selection(len(order), share, start)]
    drawn = np.zeros(len(out), dtype=bool)
    drawn[np.flatnonzero(frame)[chosen]] = True
    held = drawn | earlier

    out["status"] = out["status"].astype(object)
    out.loc[drawn, "status"] = STATUS_HOLDOUT
    out.loc[earlier, "status"] = STATUS_HELD_EARLIER
    for col, value in (("recommended_action", HOLDOUT_ACTION), ("channel", "none")):
        if col in out.columns:
            out.loc[held, col] = value
    out = pd.concat([out[~held], out[held]])
    ranked = out["rank"].notna().to_numpy() & ~out["status"].isin([STATUS_HOLDOUT, STATUS_HELD_EARLIER]).to_numpy()
    rank = pd.array(np.full(len(out), pd.NA), dtype="Int64")
    rank[ranked] = np.arange(1, int(ranked.sum()) + 1)
    out["rank"] = rank
    return out.reset_index(drop=True)


def holdout_summary(priority_list: pd.DataFrame, share: float) -> dict[str, object]:
    """Summary fields: how many were held back and, in words, why it matters."""
    status = priority_list["status"].astype(object)
    n_holdout = int(status.eq(STATUS_HOLDOUT).sum())
    n_earlier = int(status.eq(STATUS_HELD_EARLIER).sum())
    why = (
        f"{n_holdout} customers ({share:.0%} of those the list would contact) are held back at random "
        "as a control group: comparing their churn with the contacted customers' when the horizon "
        "has passed measures what the outreach achieved."
        if share > 0
        else "No control group (serving.holdout_share = 0): the campaign's effect cannot be measured."
    )
    if n_earlier:
        why += f" {n_earlier} more are still in an earlier list's control group and are not contacted."
    return {"holdout_share": float(share), "n_holdout": n_holdout, "n_held_earlier": n_earlier,
            "holdout_why": why}
