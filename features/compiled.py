"""Loops over every event row, compiled by Numba: per-customer sums and text encoding.

Validated events are grouped by customer in time order, so each customer's rows are one run
(``starts[r]`` up to the next run's start) and everything a feature needs of them — counts,
first and last ages, distinct active days and the gaps between them, spend, the event-type mix
of a window — is one loop over the run. The NumPy version needed about fifteen passes over 20M
rows, each with its own temporary array, and spent ~2.5 s of CPU per million customers where
this loop spends ~0.15 s (all windows in the same pass).

The loops reproduce NumPy's arithmetic to the last bit: an age is ``float(t - time) / day`` as
NumPy divides two timedeltas, a window is ``age <= w``, and spend is added row by row from 0.0
as ``np.bincount`` adds it. A run whose kept rows are not in time order makes the pass answer
``False`` (the caller sorts and runs it again). Rows on or after ``t`` (and missing times) are
skipped, as are runs of customers outside the population (``run_pos < 0``).

The functions release the GIL: the caller may split the runs between threads (each customer
is written by exactly one run, so the result does not depend on the split).

``encode_words`` numbers the distinct texts of an Arrow text column (a handful of event types
over millions of rows) straight from its buffers: Arrow's hash encoding plus filling its nulls
and renumbering took twice as long and wrote nine times the memory (int32 codes, twice).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from numba import njit

THREADS = int(os.environ.get("CHURNFLOW_THREADS", "0") or 0) or min(2, os.cpu_count() or 1)
"""Threads the passes over all rows are split between: one per core, at most two (measured on
two cores only), or ``CHURNFLOW_THREADS``. Results are the same for any number; the worker
processes of churnflow's local Dask clusters, which already run one task per core, get 1
(``features.partitioned.WORKER_ENV``)."""
T = TypeVar("T")


def _compiled(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` compiled with its machine code cached on disk (next to this file, or in the
    user's cache folder), or compiled anew in each process where no cache folder is writable
    (Numba refuses to cache there, at import)."""
    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError:
        return njit(nogil=True)(function)


def in_threads(task: Callable[[int, int], T], ranges: list[tuple[int, int]]) -> list[T]:
    """``task(a, b)`` for each range (of rows, runs or customers), one thread each; answers in
    range order. The compiled loops and NumPy's and SciPy's element-wise functions release the
    GIL, so the threads run side by side."""
    if len(ranges) <= 1:
        return [task(*r) for r in ranges]
    with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
        return list(pool.map(lambda r: task(*r), ranges))


def even_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """``[a, b)`` ranges splitting ``0 .. n`` into at most ``parts`` about equal non-empty parts, in order."""
    edges = np.unique(np.linspace(0, n, max(parts, 1) + 1).astype(int))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=False)]


DAY_NS = 86_400 * 10**9
NAT = np.iinfo(np.int64).min


@_compiled
def event_pass(starts: np.ndarray, run_pos: np.ndarray, times: np.ndarray, t_ns: np.int64, amounts: np.ndarray,
               type_codes: np.ndarray, type_of_code: np.ndarray, windows: np.ndarray, r0: int, r1: int,
               total: np.ndarray, first_age: np.ndarray, last_age: np.ndarray, active_days: np.ndarray,
               gap_sum: np.ndarray, gap_squares: np.ndarray, spend: np.ndarray, window_rows: np.ndarray,
               window_spend: np.ndarray, window_type_rows: np.ndarray) -> bool:
    """Runs ``r0 .. r1-1``, written per customer at ``run_pos`` into outputs that start as 0 (NaN
    for the ages): rows, first and last age, active days, sum and sum of squares of the gaps
    between them, spend; and for each of ``windows`` (days, k) the rows with ``age <= w``
    (``window_rows[k]``), their spend (``window_spend[k]``) and their rows per event type
    (``window_type_rows[k, type_of_code[type_codes[i]]]``; -1: none). Empty ``amounts``: no
    spend; empty ``type_codes``: no types. False when a run's kept rows are not in time order."""
    n_rows, with_spend, with_types = len(times), len(amounts) > 0, len(type_codes) > 0
    for r in range(r0, r1):
        p = run_pos[r]
        if p < 0:
            continue
        end = starts[r + 1] if r + 1 < len(starts) else n_rows
        rows, previous, day, new_days, gaps, squares, spent = 0, NAT, 0.0, 0, 0.0, 0.0, 0.0
        for i in range(starts[r], end):
            time = times[i]
            if time == NAT or time >= t_ns:
                continue
            if time < previous:
                return False
            age = np.float64(t_ns - time) / DAY_NS
            # A row's calendar day is its age rounded up; steps between the days of adjacent rows
            # are 0 within a day and the gaps between active days otherwise (whole numbers).
            step = day - np.ceil(age) if rows else 0.0
            day = np.ceil(age)
            new_days += step > 0
            gaps += step
            squares += step * step
            amount = amounts[i] if with_spend else 0.0
            spent += amount
            for k in range(len(windows)):
                if age <= windows[k]:
                    window_rows[k, p] += 1
                    window_spend[k, p] += amount
                    if with_types:
                        code = type_of_code[type_codes[i]]
                        if code >= 0:
                            window_type_rows[k, code, p] += 1
            if rows == 0:
                first_age[p] = age
            last_age[p] = age
            previous = time
            rows += 1
        if rows:
            total[p], active_days[p], gap_sum[p], gap_squares[p] = rows, new_days + 1, gaps, squares
            if with_spend:
                spend[p] = spent
    return True


@_compiled
def encode_words(offsets: np.ndarray, data: np.ndarray, validity: np.ndarray, first_bit: int, codes: np.ndarray,
                 pool: np.ndarray, pool_offsets: np.ndarray) -> int:
    """Number each text of one Arrow text array (``offsets``, ``data``, ``validity`` bitmap from
    bit ``first_bit``, empty: no nulls) by its distinct text in order of first appearance;
    -1 for nulls. The distinct texts are kept in ``pool[pool_offsets[k]:pool_offsets[k + 1]]``.
    Answers how many there are, or -1 when they outgrow ``pool`` or ``pool_offsets``."""
    with_validity, n_distinct = len(validity) > 0, 0
    for i in range(len(codes)):
        bit = first_bit + i
        if with_validity and not (validity[bit >> 3] >> (bit & 7)) & 1:
            codes[i] = -1
            continue
        start, length = offsets[i], offsets[i + 1] - offsets[i]
        found = -1
        for k in range(n_distinct):
            at = pool_offsets[k]
            if pool_offsets[k + 1] - at != length:
                continue
            j = 0
            while j < length and pool[at + j] == data[start + j]:
                j += 1
            if j == length:
                found = k
                break
        if found < 0:
            at = pool_offsets[n_distinct]
            if n_distinct + 2 > len(pool_offsets) or at + length > len(pool):
                return -1
            pool[at:at + length] = data[start:start + length]
            pool_offsets[n_distinct + 1] = at + length
            found = n_distinct
            n_distinct += 1
        codes[i] = found
    return n_distinct


@_compiled
def renumber(codes: np.ndarray, lookup: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = lookup[codes[i]]`` (code -1 reads the last entry, as NumPy indexing does) in
    one pass: NumPy's fancy indexing takes four times as long at 20M rows."""
    for i in range(len(codes)):
        out[i] = lookup[codes[i]]


@_compiled
def run_starts(values: np.ndarray) -> np.ndarray:
    """First row of each run of equal values, in one pass (NumPy's ``flatnonzero`` of the
    ``!=`` of neighbours takes two, and writes a mask of every row)."""
    n = len(values)
    starts = np.empty(n, np.intp)  # (only the pages written, one per 512 runs, are touched)
    k = 0
    for i in range(n):
        if i == 0 or values[i] != values[i - 1]:
            starts[k] = i
            k += 1
    return starts[:k].copy()


@_compiled
def sorted_by_key_and_time(keys: np.ndarray, times: np.ndarray) -> bool:
    """Whether rows are sorted by ``keys``, then ``times``."""
    for i in range(1, len(keys)):
        if keys[i] < keys[i - 1] or (keys[i] == keys[i - 1] and times[i] < times[i - 1]):
            return False
    return True
