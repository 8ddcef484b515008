"""Per-customer aggregates of everything before one as-of date, computed once and on demand.

``Aggregates`` holds each customer's events as a run of rows (and contacts strictly before
``T``), and exposes the quantities the feature spec's ``compute`` functions read
(``a.last_age``, ``a.frequency(30)``, ``a.gap_mean``, ...). Quantities are cached, so a window
used by a frequency feature and by a trend is counted once.

Implementation note: rows are grouped by customer in time order (validated tables already
are; other tables are sorted first), so everything per customer is one compiled loop over its
run (``features.compiled``): one pass for the whole history and every declared window, split
between threads. No pandas group-by and no per-row temporaries: at 20M events this is the
difference between seconds and minutes. Floats are computed exactly as NumPy computed them
before (ages, ``bincount``'s row-by-row spend sums), so every feature is the same to the last
bit on every engine and for any number of threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import NamedTuple

import numpy as np
import pandas as pd

from churnflow.features import btyd, compiled

DAY = np.timedelta64(1, "D")


class _Rows(NamedTuple):
    """Event rows as the compiled passes read them: runs of one customer's rows (``starts``), the
    customer's position of each run (-1: not in the population), times as int64 nanoseconds,
    amounts (empty: none), and event-type codes with the position of each code's type in the
    feature's types (``type_of_code``; empty codes: no types)."""

    starts: np.ndarray
    run_pos: np.ndarray
    times: np.ndarray
    amounts: np.ndarray
    type_codes: np.ndarray
    type_of_code: np.ndarray

    def sorted_by_customer_and_time(self, t_ns: np.int64) -> _Rows:
        """The rows before ``t`` of customers in the population, each customer's in one run in
        time order (``np.lexsort`` is stable: rows of equal time keep their order)."""
        lengths = np.diff(np.r_[self.starts, len(self.times)])
        pos = np.repeat(self.run_pos, lengths)
        keep = (self.times < t_ns) & (self.times != compiled.NAT) & (pos >= 0)
        order = np.flatnonzero(keep)[np.lexsort((self.times[keep], pos[keep]))]
        pos = pos[order]
        starts = compiled.run_starts(pos)
        types = self.type_codes[order] if len(self.type_codes) else self.type_codes
        amounts = self.amounts[order] if len(self.amounts) else self.amounts
        return _Rows(starts, pos[starts], self.times[order], amounts, types, self.type_of_code)

    def split(self, parts: int) -> list[tuple[int, int]]:
        """Runs ``[r0, r1)`` of about equal numbers of rows, in order (one per thread)."""
        bounds = np.searchsorted(self.starts, np.linspace(0, len(self.times), parts + 1)[1:-1])
        edges = [0, *np.unique(bounds).tolist(), len(self.starts)]
        return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=False) if b > a]


def positions(index: pd.Index, values: pd.Index) -> np.ndarray:
    """``index.get_indexer(values)`` (-1: not there), by merging the two when both are sorted
    and unique, as a customers table and its events usually are: five times faster than hashing
    a million ids."""
    if not (index.dtype == values.dtype and index.is_monotonic_increasing and index.is_unique
            and values.is_monotonic_increasing and values.is_unique):
        return index.get_indexer(values)
    _, found, _ = index.join(values, how="right", return_indexers=True)
    return np.arange(len(values), dtype=np.intp) if found is None else found


def _customer_runs(ids: pd.Index, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of rows of one customer and each run's position in ``ids`` (-1 for others).

    Rows of one customer are adjacent in validated tables, so ids are looked up once per run:
    a twentieth of the hash lookups at 20 events per customer. Numeric ids make runs of equal
    ids; other ids are looked up per row (runs of equal positions)."""
    if row_ids.dtype.kind in "iu":
        starts = compiled.run_starts(row_ids)
        return starts, positions(ids, pd.Index(row_ids[starts]))
    pos = ids.get_indexer(row_ids)
    starts = compiled.run_starts(pos)
    return starts, pos[starts]


def _event_type_lookup(events: pd.DataFrame, event_types: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's category code and, per code, its type's position in ``event_types`` (-1 for
    others; one more -1 at the end for the missing code -1): no string compares."""
    col = events["event_type"]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype("category")
    lookup = np.append(pd.Index(event_types).get_indexer(col.cat.categories), -1).astype(np.int8)
    return col.cat.codes.to_numpy(), lookup


def _amounts(events: pd.DataFrame) -> np.ndarray:
    """Amounts as float64 with missing ones 0 (copied only when some are missing)."""
    amount = events["amount"].to_numpy(dtype="float64")
    return np.nan_to_num(amount) if np.isnan(amount).any() else amount


def _event_rows(ids: pd.Index, events: pd.DataFrame | None, event_types: list[str], with_amount: bool) -> _Rows:
    """The passes' view of ``events`` (no copy of a column already of the right type)."""
    none = np.zeros(0, np.int64)
    if events is None:
        return _Rows(np.zeros(0, np.intp), none, none, np.zeros(0), np.zeros(0, np.int8), np.full(1, -1, np.int8))
    starts, run_pos = _customer_runs(ids, events["customer_id"].to_numpy())
    times = events["event_time"].to_numpy().astype("datetime64[ns]", copy=False).view(np.int64)
    codes, lookup = _event_type_lookup(events, event_types) if event_types else (np.zeros(0, np.int8),
                                                                                  np.full(1, -1, np.int8))
    return _Rows(starts, run_pos, times, _amounts(events) if with_amount else np.zeros(0), codes, lookup)


def _group_first(pos: np.ndarray, values: np.ndarray, n: int, largest: bool) -> np.ndarray:
    """Per-customer min (or max) of ``values`` for unordered rows; NaN for customers without rows."""
    out = np.full(n, np.nan)
    if len(pos):
        order = np.lexsort((-values if largest else values, pos))
        p = pos[order]
        first = np.r_[True, p[1:] != p[:-1]]
        out[p[first]] = values[order][first]
    return out


class _History(NamedTuple):
    """Per customer (float64): rows, first and last age, active days, sum and sum of squares of
    the gaps between active days, spend; and per window (days, k): rows, spend and rows per
    event type (``window_type_rows[k]``: types x customers)."""

    total: np.ndarray
    first_age: np.ndarray
    last_age: np.ndarray
    active_days: np.ndarray
    gap_sum: np.ndarray
    gap_squares: np.ndarray
    spend: np.ndarray
    windows: tuple[int, ...]
    window_rows: np.ndarray
    window_spend: np.ndarray
    window_type_rows: np.ndarray


class Aggregates:
    """What is known about customers ``ids`` strictly before ``t``.

    ``events`` may be ``None`` (no activity data): then every event quantity is empty and
    tenure comes from ``signup`` alone. ``btyd_params``: BG/NBD parameters to apply; ``None``
    fits them on these customers (only for the whole population at ``t``, see ``features.build``).
    ``windows``: the windows (days) the features will ask about, counted in the same pass as the
    rest (another window costs a pass of its own). ``threads``: how many threads the passes over
    event rows are split between (default ``compiled.THREADS``; the result is the same for any number).
    """

    def __init__(self, ids: pd.Index, t: np.datetime64, signup: np.ndarray, events: pd.DataFrame | None,
                 contacts: pd.DataFrame | None, *, event_types: list[str], with_amount: bool,
                 btyd_params: dict[str, float] | None = None, horizon_days: int = 0,
                 windows: Sequence[int] = (), threads: int | None = None) -> None:
        self.n = len(ids)
        self.t = t
        self.signup_age = (t - signup) / DAY
        self.btyd_params = btyd_params
        self.horizon_days = horizon_days
        self.threads = compiled.THREADS if threads is None else threads
        self._t_ns = np.datetime64(t, "ns").astype(np.int64)
        self._contacts = contacts
        self._ids = ids
        self._rows = _event_rows(ids, events, event_types, with_amount)
        self._n_types = len(event_types)
        self._windows = tuple(dict.fromkeys(windows))

    @cached_property
    def _history(self) -> _History:
        return self._pass(self._windows)

    def _pass(self, windows: tuple[int, ...]) -> _History:
        """One pass over the rows as they are when each customer's rows are one run in time
        order (validated tables), else over the rows sorted that way (kept for later passes)."""
        rows = self._rows
        if len(rows.run_pos) and np.bincount(rows.run_pos[rows.run_pos >= 0], minlength=1).max() > 1:
            rows = self._rows = rows.sorted_by_customer_and_time(self._t_ns)  # a customer's rows in two runs
        history = self._event_pass(rows, windows)
        if history is None:  # some customer's rows not in time order
            self._rows = rows.sorted_by_customer_and_time(self._t_ns)
            history = self._event_pass(self._rows, windows)
        assert history is not None
        return history

    def _event_pass(self, rows: _Rows, windows: tuple[int, ...]) -> _History | None:
        n, k = self.n, len(windows)
        total, first_age, last_age = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
        active_days, gap_sum, gap_squares, spend = (np.zeros(n) for _ in range(4))
        window_rows, window_spend = np.zeros((k, n)), np.zeros((k, n))
        window_type_rows = np.zeros((k, self._n_types, n), np.int32)

        def task(r0: int, r1: int) -> bool:
            return compiled.event_pass(rows.starts, rows.run_pos, rows.times, self._t_ns, rows.amounts,
                                       rows.type_codes, rows.type_of_code, np.array(windows, np.float64), r0, r1,
                                       total, first_age, last_age, active_days, gap_sum, gap_squares, spend,
                                       window_rows, window_spend, window_type_rows)

        if not all(compiled.in_threads(task, rows.split(self.threads))):
            return None
        return _History(total, first_age, last_age, active_days, gap_sum, gap_squares, spend, windows, window_rows,
                        window_spend, window_type_rows)

    def _window(self, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per customer, rows in the last ``w`` days, their spend and their rows per event type."""
        history = self._history
        if w not in history.windows:
            history = self._cached(("window", w), lambda: self._pass((w,)))
        k = history.windows.index(w)
        return history.window_rows[k], history.window_spend[k], history.window_type_rows[k]

    # ---- recency, frequency, monetary ---------------------------------------------------------
    @property
    def last_age(self) -> np.ndarray:
        return self._history.last_age

    @property
    def first_age(self) -> np.ndarray:
        return self._history.first_age

    @cached_property
    def tenure(self) -> np.ndarray:
        # The same start as labels.customer_start: the signup date, else the first event.
        return np.where(np.isnan(self.signup_age), self.first_age, self.signup_age)

    @property
    def total(self) -> np.ndarray:
        return self._history.total

    def frequency(self, w: int) -> np.ndarray:
        return self._window(w)[0]

    @property
    def monetary_total(self) -> np.ndarray:
        return self._history.spend

    @cached_property
    def avg_amount(self) -> np.ndarray:
        return np.divide(self.monetary_total, self.total, out=np.full(self.n, np.nan), where=self.total > 0)

    def monetary(self, w: int) -> np.ndarray:
        return self._window(w)[1]

    def _cached(self, key: tuple[str, int], make: Callable[[], _History]) -> _History:
        cache = self.__dict__.setdefault("_window_cache", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    # ---- rhythm: gaps between distinct active days ("purchase-days") ---------------------------
    @property
    def active_days(self) -> np.ndarray:
        return self._history.active_days

    @cached_property
    def _gaps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per customer: number of gaps between active days, their sum and their sum of squares.

        A row's calendar day is its days before T rounded up (00:00 and 10:00 of one day agree);
        gaps are whole numbers held exactly in float64, so their sums are exact in any order."""
        h = self._history
        return np.maximum(h.active_days - 1, 0), h.gap_sum, h.gap_squares

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
        freq, _, type_rows = self._window(w)
        denominator = np.where(freq > 0, freq, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(freq > 0, type_rows[code].astype(np.float64) / denominator, np.nan)

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
        """p_alive and expected active days: customer by customer, so computed on slices of the
        customers in threads (SciPy's functions release the GIL) and joined in order."""
        x, t_x, big_t = self.btyd_inputs
        params = self.btyd_params if self.btyd_params is not None else btyd.fit_histories(self.btyd_histories)

        def task(c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
            inputs = (x[c0:c1], t_x[c0:c1], big_t[c0:c1])
            return btyd.p_alive(params, *inputs), btyd.expected_purchases(params, self.horizon_days, *inputs)

        parts = compiled.in_threads(task, compiled.even_ranges(self.n, self.threads)) or [(np.zeros(0), np.zeros(0))]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

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
