"""The public CDNOW event log through the same config mechanism as any user's data.

Oracle: the BG/NBD model fitted on CDNOW weeks 1-39 (calibration ends 1997-09-30) has published
parameters r=0.243, alpha=4.414, a=0.793, b=2.426, log-likelihood -9582.4 (Fader, Hardie and Lee
2005; data/cdnow/PROVENANCE.md). Fitting BG/NBD to the RFM summary derived from churnflow's
point-in-time features as of 1997-10-01 must reproduce them: that checks recency, repeat
purchase-days and tenure on real data, exactly as the literature defines them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnflow.features import btyd
from churnflow.features.build import build_features, infer_schema
from churnflow.features.contracts import load_tables
from churnflow.features.settings import load_settings
from tests.conftest import REPO


@pytest.fixture(scope="module")
def cdnow():
    settings = load_settings(REPO / "configs" / "cdnow.toml")
    return settings, load_tables(settings)


def test_cdnow_loads_through_its_config(cdnow) -> None:
    settings, tables = cdnow
    assert len(tables.customers) == 2357 and len(tables.events) == 6919
    assert tables.events["event_time"].min() == pd.Timestamp("1997-01-01")  # yyyymmdd integers parsed
    assert tables.end_date == pd.Timestamp("1998-06-30")
    assert "original_id" not in infer_schema(tables, settings).features  # not a customers attribute


PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


def test_rfm_summary_reproduces_published_bgnbd_fit(cdnow) -> None:
    settings, tables = cdnow
    feats = build_features(tables, pd.Timestamp("1997-10-01"), settings, infer_schema(tables, settings))
    assert len(feats) == 2357  # every customer bought in Q1 1997
    x = feats["active_days_total"].to_numpy() - 1  # repeat purchase-days
    # T and recency in weeks, to the end of the calibration period (1997-09-30, one day before as-of)
    t = (feats["tenure_days"].to_numpy() - 1) / 7
    t_x = (feats["tenure_days"].to_numpy() - feats["recency_days"].to_numpy()) / 7
    fit = btyd.fit_bgnbd(x, t_x, t)
    assert fit["r"] == pytest.approx(0.243, abs=0.001)
    assert fit["alpha"] == pytest.approx(4.414, abs=0.01)
    assert fit["a"] == pytest.approx(0.793, abs=0.001)
    assert fit["b"] == pytest.approx(2.426, abs=0.01)
    log_params = np.log([fit[k] for k in btyd.PARAMETERS])
    assert -btyd.negative_log_likelihood(log_params, x, t_x, t) == pytest.approx(-9582.4, abs=0.1)


def test_conditional_expectations_match_the_paper() -> None:
    """Fader, Hardie & Lee (2005), section 5: a customer with x = 2, t_x = 30.43, T = 38.86 weeks
    is expected to make 1.226 repeat purchases in the next 39 weeks. The other values are those
    of the ``lifetimes`` package at the same parameters (checked once, not a dependency)."""
    x, t_x, t = np.array([2, 0, 10, 5.0]), np.array([30.43, 0, 35, 10]), np.array([38.86, 38.86, 38, 38])
    np.testing.assert_allclose(btyd.expected_purchases(PUBLISHED, 39, x, t_x, t),
                               [1.226028, 0.195098, 6.447840, 0.106376], atol=1e-6)
    np.testing.assert_allclose(btyd.p_alive(PUBLISHED, x, t_x, t), [0.726579, 1.0, 0.871739, 0.027482], atol=1e-6)
    # customers without history have no BG/NBD quantities
    assert np.isnan(btyd.p_alive(PUBLISHED, [np.nan], [np.nan], [np.nan])).all()


def test_btyd_features_on_cdnow_are_the_fit_at_the_as_of_date(cdnow) -> None:
    """The features at T come from a fit on the history before T, in days (alpha scales with the
    time unit; r, a and b do not), and reproduce the paper's calibration fit."""
    settings, tables = cdnow
    schema = infer_schema(tables, settings)
    assert schema.btyd["as_of"].startswith("1998-07-01")  # fitted on all data: for scoring only
    feats = build_features(tables, pd.Timestamp("1997-10-01"), settings, schema)
    x = feats["active_days_total"].to_numpy() - 1
    t = feats["tenure_days"].to_numpy() - 1
    t_x = feats["tenure_days"].to_numpy() - feats["recency_days"].to_numpy()
    fit = btyd.fit_bgnbd(x, t_x, t)
    assert fit["r"] == pytest.approx(0.243, abs=0.001) and fit["a"] == pytest.approx(0.793, abs=0.001)
    assert fit["alpha"] / 7 == pytest.approx(4.414, abs=0.01)
    np.testing.assert_allclose(feats["p_alive"], btyd.p_alive(fit, x, t_x, t))
    horizon = settings.churn.horizon_days
    np.testing.assert_allclose(feats["expected_active_days"], btyd.expected_purchases(fit, horizon, x, t_x, t))
    assert feats["p_alive"].between(0, 1).all() and (feats["expected_active_days"] >= 0).all()
