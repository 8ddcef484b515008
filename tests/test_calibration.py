"""Calibration: strictly increasing maps that keep the list's order, chosen by held-out log loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import log_loss, roc_auc_score

from churnflow.features.settings import Settings
from churnflow.training.calibration import (
    Calibrator,
    apply_calibration,
    expected_calibration_error,
    fit_calibrator,
)

METHODS = ["sigmoid", "beta", "isotonic"]


def churn_rows(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True churn probabilities (calibrated by construction) and labels drawn from them."""
    rng = np.random.default_rng(seed)
    true = 1.0 / (1.0 + np.exp(-(rng.normal(size=n) * 1.3 - 1.2)))
    return true, (rng.random(n) < true).astype(np.int8)


def overconfident(p: np.ndarray) -> np.ndarray:
    """A class-weighted booster's distortion: margins stretched and shifted towards churn."""
    return 1.0 / (1.0 + np.exp(-(2.5 * np.log(p / (1 - p)) + 1.5)))


@pytest.mark.parametrize("method", METHODS)
def test_every_map_keeps_the_order_auc_and_the_distinct_scores(method: str) -> None:
    true, y = churn_rows()
    # Ties in the raw scores (a shallow model gives many) must stay ties, nothing more.
    raw = np.round(overconfident(true), 3)
    calibrator = fit_calibrator(raw, y, method=method)
    calibrated = calibrator.transform(raw)
    assert calibrator.method == method
    np.testing.assert_array_equal(rankdata(calibrated), rankdata(raw))
    assert len(np.unique(calibrated)) == len(np.unique(raw))
    assert roc_auc_score(y, calibrated) == roc_auc_score(y, raw)
    assert log_loss(y, calibrated) < log_loss(y, raw) - 0.05, "the map must actually calibrate"
    assert calibrated.min() > 0 and calibrated.max() < 1


def test_isotonic_is_strict_where_plain_isotonic_regression_is_flat() -> None:
    """Plain isotonic regression pools thousands of scores into a few dozen values; ours does not."""
    from sklearn.isotonic import IsotonicRegression

    true, y = churn_rows()
    raw = overconfident(true)
    plain = IsotonicRegression(out_of_bounds="clip").fit(raw, y).predict(raw)
    assert len(np.unique(plain)) < len(raw) / 20, "the premise: plain isotonic creates long ties"
    calibrated = fit_calibrator(raw, y, method="isotonic").transform(raw)
    assert len(np.unique(calibrated)) == len(np.unique(raw))
    # Fresh scores outside the fitted range (both flat ends) keep their order too.
    fresh = np.array([1e-6, 1e-5, 1e-4, 0.5, 0.9999, 0.99999])
    assert np.all(np.diff(fit_calibrator(raw, y, method="isotonic").transform(fresh)) > 0)


def test_auto_keeps_identity_on_calibrated_scores_and_picks_a_map_otherwise() -> None:
    true, y = churn_rows()
    kept = fit_calibrator(true, y, method="auto", seed=1)
    assert kept.method == "identity"
    assert set(kept.log_loss_by_method) == {"identity", *METHODS}
    np.testing.assert_array_equal(kept.transform(true), true)

    raw = overconfident(true)
    chosen = fit_calibrator(raw, y, method="auto", seed=1)
    assert chosen.method in METHODS
    assert chosen.log_loss_by_method[chosen.method] == min(chosen.log_loss_by_method.values())
    fresh_true, fresh_y = churn_rows(seed=7)
    fresh_raw = overconfident(fresh_true)
    assert expected_calibration_error(chosen.transform(fresh_raw), fresh_y) < 0.03
    assert expected_calibration_error(fresh_raw, fresh_y) > 0.1


def test_beta_fits_a_skewed_distortion_sigmoid_cannot() -> None:
    """Beta calibration's two slopes fix a distortion that differs between the tails."""
    true, y = churn_rows(n=20000)
    raw = np.exp(0.5 * np.log(true))  # p**0.5: inflated low scores, nearly right near 1
    beta = fit_calibrator(raw, y, method="beta")
    sigmoid = fit_calibrator(raw, y, method="sigmoid")
    assert beta.a > 0 and beta.b >= 0
    assert log_loss(y, beta.transform(raw)) < log_loss(y, sigmoid.transform(raw))


def test_one_class_or_too_few_churners_gives_identity() -> None:
    p = np.linspace(0.1, 0.9, 50)
    assert fit_calibrator(p, np.zeros(50), method="auto").method == "identity"
    one_churner = np.zeros(50)
    one_churner[-1] = 1
    assert fit_calibrator(p, one_churner, method="auto").method == "identity"


@pytest.mark.parametrize("method", METHODS)
def test_json_round_trip_and_pure_function_agree(method: str) -> None:
    true, y = churn_rows(n=1500)
    raw = overconfident(true)
    calibrator = fit_calibrator(raw, y, method=method)
    restored = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert restored == calibrator
    fields = {k: v for k, v in calibrator.to_dict().items() if k != "log_loss_by_method"}
    np.testing.assert_array_equal(apply_calibration(raw, **fields), calibrator.transform(raw))


def test_settings_accept_every_method_and_default_to_auto(tmp_path) -> None:
    assert Settings(root=tmp_path).training.calibration == "auto"
    for method in ["auto", "identity", "sigmoid", "beta", "isotonic"]:
        assert Settings(root=tmp_path, training={"calibration": method}).training.calibration == method
