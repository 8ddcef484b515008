"""BG/NBD sufficient statistics: histories add up across partitions, and the fit's sample is
the same however customers are partitioned (what the Dask engine relies on)."""

from __future__ import annotations

import numpy as np

from churnflow.features import btyd


def _customers(n: int, seed: int = 1) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    big_t = rng.integers(30, 700, n).astype(float)
    x = rng.poisson(3, n).astype(float)
    t_x = np.where(x > 0, np.floor(rng.random(n) * big_t), 0.0)
    return np.arange(1000, 1000 + n), x, t_x, big_t


def test_histories_add_up_across_partitions() -> None:
    ids, x, t_x, big_t = _customers(5000)
    whole = btyd.Histories.of(x, t_x, big_t, ids)
    part = np.random.default_rng(2).integers(0, 7, len(ids))
    merged = btyd.Histories.merge([btyd.Histories.of(x[part == p], t_x[part == p], big_t[part == p], ids[part == p])
                                   for p in range(7)])
    np.testing.assert_array_equal(merged.rows, whole.rows)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert merged.counts.sum() == len(ids)
    assert btyd.fit_histories(merged, 1500) == btyd.fit_histories(whole, 1500)


def test_fit_sample_is_whole_hash_buckets_up_to_the_cap() -> None:
    ids, x, t_x, big_t = _customers(5000)
    histories = btyd.Histories.of(x, t_x, big_t, ids)
    rows, counts = histories.sample(1500)
    assert 1000 < counts.sum() <= 1500  # ~20 customers per bucket: the cap is met closely
    all_rows, all_counts = histories.sample(10_000)
    assert all_counts.sum() == 5000 and rows.shape[1] == all_rows.shape[1] == 3
    sampled = btyd.fit_histories(histories, 1500)
    full = btyd.fit_histories(histories, 10_000)
    assert sampled != full and abs(sampled["r"] - full["r"]) / full["r"] < 0.5  # a sample, of the same world
