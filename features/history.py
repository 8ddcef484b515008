"""Per-customer aggregates of everything before one as-of date, computed once and on demand.

``Aggregates`` holds each customer's events and contacts strictly before ``T`` as integer
customer positions plus ages in days, and exposes the quantities the feature spec's ``compute``
functions read (``a.last_age``, ``a.frequency(30)``, ``a.gap_mean``, ...). Quantities are cached,
so a window used by a frequency feature and by a trend is counted once, and a quantity no
declared feature needs is never computed.

Implementation note: rows are grouped by customer in time order (validated tables already
are), so each customer's rows are one run: counts are ``np.add.reduceat`` sums over the runs,
first and last events are the runs' ends, and float sums (spend) use ``np.bincount``, which adds
row by row in a fixed order, so they are the same to the last bit everywhere. No pandas
group-by: at 20M events this is the difference between seconds and minutes. Each new array of
20M rows costs about as much in page faults as the arithmetic on it, so temporaries are few.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np
import pandas as pd

from churnflow.features import btyd

DAY = np.timedelta64(1, "D")


def _run_starts(pos: np.ndarray) -> np.ndarray:
    """First row of each run of equal customer positions."""
    if not len(pos):
        return np.zeros(0, dtype=np.intp)
    first = np.empty(len(pos), dtype=bool)
    first[0] = True
    np.not_equal(pos[1:], pos[:-1], out=first[1:])
    return np.flatnonzero(first)


def _grouped_in_time_order(pos: np.ndarray, times: np.ndarray, starts: np.ndarray, n: int) -> bool:
    """True when each customer's rows are adjacent (one run each) and in time order (validated tables are)."""
    if np.bincount(pos[starts], minlength=n).max(initial=0) > 1:  # a customer's rows in two runs
        return False
    later = times[1:] >= times[:-1]
    later[starts[1:] - 1] = True  # the next customer's first row may be earlier
    return bool(later.all())


def _event_type_codes(events: pd.DataFrame, event_types: list[str]) -> np.ndarray:
    """Position of each row's type in ``event_types`` (-1 for others), without string compares."""
    col = events["event_type"]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype("category")
    # One lookup per category, one more (-1) at the end for the missing code -1.
    lookup = np.append(pd.Index(event_types).get_indexer(col.cat.categories), -1).astype(np.int8)
    return lookup[col.cat.codes.to_numpy()]  # int8: at most MAX_EVENT_TYPES types, an eighth of the bytes


def _amounts(events: pd.DataFrame) -> np.ndarray:
    """Amounts as float64 with missing ones 0 (copied only when some are missing)."""
    amount = events["amount"].to_numpy(dtype="float64")
    return np.nan_to_num(amount) if np.isnan(amount).any() else amount


def _positions(ids: pd.Index, row_ids: np.ndarray) -> np.ndarray:
    """Position of each row's customer in ``ids`` (-1 for others).

    Rows of one customer are adjacent in validated tables, so numeric ids are looked up once per
    run of equal ids and repeated: a twentieth of the hash lookups at 20 events per customer.
    Correct for any row order (a repeated run is looked up again).
    """
    if len(row_ids) < 2 or row_ids.dtype.kind not in "iu":
        return ids.get_indexer(row_ids)
    starts = np.flatnonzero(np.r_[True, row_ids[1:] != row_ids[:-1]])
    lengths = np.diff(np.r_[starts, len(row_ids)])
    return np.repeat(ids.get_indexer(row_ids[starts]), lengths)


def _days_before(t: np.datetime64, times: np.ndarray, scratch: bool) -> np.ndarray:
    """``(t - times) / 1 day`` as float64, bit for bit, without NumPy's per-element NaT handling
    of datetime arithmetic (``times`` are all before ``t``: no NaT). NumPy divides two timedeltas
    as ``(double) a / (double) b`` in nanoseconds; so does this, in the memory of the differences
    (and of ``times`` themselves when they are a ``scratch`` copy): no new 8-byte array per row."""
    t_ns = np.datetime64(t, "ns").astype(np.int64)
    ns = times.astype("datetime64[ns]", copy=False).view(np.int64)
    before = np.subtract(t_ns, ns, out=ns if scratch else None)
    return np.true_divide(before, float(DAY / np.timedelta64(1, "ns")), out=before.view(np.float64))


def _group_first(pos: np.ndarray, values: np.ndarray, n: int, largest: bool) -> np.ndarray:
    """Per-customer min (or max) of ``values`` for unordered rows; NaN for customers without rows."""
    out = np.full(n, np.nan)
    if len(pos):
        order = np.lexsort((-values if largest else values, pos))
        p = pos[order]
        first = np.r_[True, p[1:] != p[:-1]]
        out[p[first]] = values[order][first]
    return out


class Aggregates:
    """What is known about customers ``ids`` strictly before ``t``.

    ``events`` may be ``None`` (no activity data): then every event quantity is empty and
    tenure comes from ``signup`` alone. ``btyd_params``: BG/NBD parameters to apply; ``None``
    fits them on these customers (only for the whole population at ``t``, see ``features.build``).
    """

    def __init__(self, ids: pd.Index, t: np.datetime64, signup: np.ndarray, events: pd.DataFrame | None,
                 contacts: pd.DataFrame | None, *, event_types: list[str], with_amount: bool,
                 btyd_params: dict[str, float] | None = None, horizon_days: int = 0) -> None:
        self.n = len(ids)
        self.t = t
        self.signup_age = (t - signup) / DAY
        self.btyd_params = btyd_params
        self.horizon_days = horizon_days
        self._contacts = contacts
        self._ids = ids
        self._events_before(ids, t, events, event_types, with_amount)

    def _events_before(self, ids: pd.Index, t: np.datetime64, events: pd.DataFrame | None,
                       event_types: list[str], with_amount: bool) -> None:
        """Rows before ``t`` of customers ``ids``, grouped by customer in time order; their ages."""
        if events is None:
            pos, times, every = np.zeros(0, np.int64), np.zeros(0, "datetime64[ns]"), False
            self.amount, self.types = (np.zeros(0) if with_amount else None), None
        else:
            times = events["event_time"].to_numpy()
            pos = _positions(ids, events["customer_id"].to_numpy())
            keep = times < t  # NaT is never before t
            keep &= pos >= 0
            every = bool(keep.all())  # scoring after the data end: no row is cut, nothing is copied
            pos, times = (pos, times) if every else (pos[keep], times[keep])
            amount = _amounts(events) if with_amount else None
            types = _event_type_codes(events, event_types) if event_types else None
            self.amount = amount if every or amount is None else amount[keep]
            self.types = types if every or types is None else types[keep]
        starts = _run_starts(pos)
        if not _grouped_in_time_order(pos, times, starts, self.n):
            order = np.lexsort((times, pos))
            pos, times, every = pos[order], times[order], False
            self.amount = self.amount[order] if self.amount is not None else None
            self.types = self.types[order] if self.types is not None else None
            starts = _run_starts(pos)
        self.pos, self._starts = pos, starts
        self.age = _days_before(t, times, scratch=not every)  # days before as-of, > 0

    def count(self, mask: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        """Per-customer number (or sum of ``weights``) of the rows where ``mask`` holds.

        Numbers of rows are summed over each customer's run of rows (integers: any order gives the
        same). Sums of ``weights`` keep ``np.bincount``'s row-by-row order, so a float total is the
        same to the last bit on every engine and in every release (``np.add.reduceat`` sums pairwise).
        """
        if weights is not None:
            pos = self.pos if mask is None else self.pos[mask]
            sums = np.bincount(pos, weights=weights if mask is None else weights[mask], minlength=self.n)
            return sums.astype(np.float64, copy=False)  # (no rows: bincount answers in integers)
        if mask is None:
            return self._per_customer(self._runs[1] - self._runs[0] + 1)
        return self._per_customer(self._run_sums(mask.view(np.int8), np.int64))

    def _run_sums(self, values: np.ndarray, dtype: type) -> np.ndarray:
        """Sum of ``values`` over each customer's run of rows."""
        starts = self._runs[0]
        return np.add.reduceat(values, starts, dtype=dtype) if len(starts) else np.zeros(0, dtype)

    def _per_customer(self, per_run: np.ndarray) -> np.ndarray:
        """One value per run (customer with rows) as a float64 per customer; 0 for those without rows."""
        out = np.zeros(self.n)
        out[self._runs[2]] = per_run
        return out

    def _within(self, w: int) -> np.ndarray:
        """Rows in the last ``w`` days (computed once per window: frequency, spend and mix share it)."""
        return self._cached(("within", w), lambda: self.age <= w)

    # ---- recency, frequency, monetary ---------------------------------------------------------
    @cached_property
    def _runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each customer's rows are one run, in time order: first row = first event, last = latest.
        (first rows, last rows, the customers' positions)"""
        starts = self._starts
        ends = np.r_[starts[1:] - 1, len(self.pos) - 1] if len(starts) else starts
        return starts, ends, self.pos[starts]

    def _per_run(self, rows: np.ndarray) -> np.ndarray:
        out = np.full(self.n, np.nan)
        out[self._runs[2]] = self.age[rows]
        return out

    @cached_property
    def last_age(self) -> np.ndarray:
        return self._per_run(self._runs[1])

    @cached_property
    def first_age(self) -> np.ndarray:
        return self._per_run(self._runs[0])

    @cached_property
    def tenure(self) -> np.ndarray:
        # The same start as labels.customer_start: the signup date, else the first event.
        return np.where(np.isnan(self.signup_age), self.first_age, self.signup_age)

    @cached_property
    def total(self) -> np.ndarray:
        return self.count()

    def frequency(self, w: int) -> np.ndarray:
        return self._cached(("frequency", w), lambda: self.count(self._within(w)))

    @cached_property
    def monetary_total(self) -> np.ndarray:
        return self.count(weights=self.amount)

    @cached_property
    def avg_amount(self) -> np.ndarray:
        return np.divide(self.monetary_total, self.total, out=np.full(self.n, np.nan), where=self.total > 0)

    def monetary(self, w: int) -> np.ndarray:
        return self._cached(("monetary", w), lambda: self.count(self._within(w), self.amount))

    def _cached(self, key: tuple[str, int], make: Callable[[], np.ndarray]) -> np.ndarray:
        cache = self.__dict__.setdefault("_window_cache", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    # ---- rhythm: gaps between distinct active days ("purchase-days") ---------------------------
    @cached_property
    def _rhythm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per customer: active days, and the sum and sum of squares of the gaps between them.

        A row's calendar day is its days before T rounded up (00:00 and 10:00 of one day agree);
        days fall (weakly) along a customer's rows, so the steps from one row's day to the next
        are 0 within a day and the gaps between active days otherwise. Whole numbers held
        exactly in float64: their sums are exact in any order.
        """
        steps = np.ceil(self.age)
        if len(steps):
            steps[1:] = steps[:-1] - steps[1:]  # (the right side is a temporary)
            steps[self._runs[0]] = 0  # each customer's first row starts no gap
        new_days = self._run_sums((steps > 0).view(np.int8), np.int64)
        gap_sum = self._per_customer(self._run_sums(steps, np.float64))
        np.multiply(steps, steps, out=steps)
        return self._per_customer(new_days + 1), gap_sum, self._per_customer(self._run_sums(steps, np.float64))

    @property
    def active_days(self) -> np.ndarray:
        return self._rhythm[0]

    @cached_property
    def _gaps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per customer: number of gaps between active days, their sum and their sum of squares."""
        active_days, gap_sum, gap_squares = self._rhythm
        return np.maximum(active_days - 1, 0), gap_sum, gap_squares

    @cached_property
    def gap_mean(self) -> np.ndarray:
        n_gaps, gsum, _ = self._gaps
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_gaps > 0, gsum / n_gaps, np.nan)

    @cached_property
    def gap_std(self) -> np.ndarray:
        n_gaps, _, gsq = self._gaps
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(n_gaps > 1, (gsq - n_gaps * self.gap_mean**2) / np.maximum(n_gaps - 1, 1), np.nan)
            return np.sqrt(np.clip(var, 0, None))

    @cached_property
    def overdue_ratio(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.last_age / self.gap_mean

    # ---- trend and mix ----------------------------------------------------------------------
    @staticmethod
    def _rate_ratio(recent: np.ndarray, wider: np.ndarray, w0: int, w1: int) -> np.ndarray:
        """Rate over the last ``w0`` days relative to the ``w0+1 .. w1`` days before; NaN if no earlier rate."""
        with np.errstate(invalid="ignore", divide="ignore"):
            earlier = (wider - recent) / (w1 - w0)
            return np.where(earlier > 0, (recent / w0) / np.where(earlier > 0, earlier, 1), np.nan)

    def trend_frequency(self, w0: int, w1: int) -> np.ndarray:
        return self._rate_ratio(self.frequency(w0), self.frequency(w1), w0, w1)

    def trend_monetary(self, w0: int, w1: int) -> np.ndarray:
        return self._rate_ratio(self.monetary(w0), self.monetary(w1), w0, w1)

    def share(self, code: int, w: int) -> np.ndarray:
        """Share of the activities in the last ``w`` days that were of event type ``code``."""
        assert self.types is not None
        freq = self.frequency(w)
        denominator = np.where(freq > 0, freq, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(freq > 0, self.count(self._within(w) & (self.types == code)) / denominator, np.nan)

    # ---- buy-till-you-die ------------------------------------------------------------------------
    @cached_property
    def btyd_inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BG/NBD's (x, t_x, T) in whole days: repeat active days, last and observed span since
        the first active day (T ends the day before the as-of date). NaN without history."""
        first, last = np.ceil(self.first_age), np.ceil(self.last_age)
        return self.active_days - 1, first - last, first - 1

    @cached_property
    def btyd_histories(self) -> btyd.Histories:
        return btyd.Histories.of(*self.btyd_inputs, ids=np.asarray(self._ids))

    @cached_property
    def _btyd(self) -> tuple[np.ndarray, np.ndarray]:
        x, t_x, big_t = self.btyd_inputs
        params = self.btyd_params if self.btyd_params is not None else btyd.fit_histories(self.btyd_histories)
        return btyd.p_alive(params, x, t_x, big_t), btyd.expected_purchases(params, self.horizon_days, x, t_x, big_t)

    @property
    def p_alive(self) -> np.ndarray:
        return self._btyd[0]

    @property
    def expected_active_days(self) -> np.ndarray:
        return self._btyd[1]

    # ---- retention contacts --------------------------------------------------------------------
    @cached_property
    def _contact_ages(self) -> tuple[np.ndarray, np.ndarray]:
        contacts = self._contacts
        if contacts is None or not len(contacts):
            return np.zeros(0, np.int64), np.zeros(0)
        before = contacts["contact_time"].to_numpy() < self.t
        pos = self._ids.get_indexer(contacts["customer_id"].to_numpy()[before])
        keep = pos >= 0
        return pos[keep], (self.t - contacts["contact_time"].to_numpy()[before][keep]) / DAY

    @cached_property
    def contacts_365d(self) -> np.ndarray:
        pos, age = self._contact_ages
        return np.bincount(pos[age <= 365], minlength=self.n).astype("float64")

    @cached_property
    def days_since_contact(self) -> np.ndarray:
        pos, age = self._contact_ages
        return _group_first(pos, age, self.n, largest=False)
