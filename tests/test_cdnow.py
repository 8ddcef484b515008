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
from scipy.optimize import minimize
from scipy.special import gammaln

from features.build import build_features, infer_schema
from features.contracts import load_tables
from features.settings import load_settings
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


def _bgnbd_negative_log_likelihood(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> float:
    r, alpha, a, b = np.exp(log_params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + t)
    a4 = np.where(x > 0, np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x), -np.inf)
    return float(-np.sum(a1 + a2 + np.logaddexp(a3, a4)))


def test_rfm_summary_reproduces_published_bgnbd_fit(cdnow) -> None:
    settings, tables = cdnow
    feats = build_features(tables, pd.Timestamp("1997-10-01"), settings, infer_schema(tables, settings))
    assert len(feats) == 2357  # every customer bought in Q1 1997
    x = feats["active_days_total"].to_numpy() - 1  # repeat purchase-days
    # T and recency in weeks, to the end of the calibration period (1997-09-30, one day before as-of)
    t = (feats["tenure_days"].to_numpy() - 1) / 7
    t_x = (feats["tenure_days"].to_numpy() - feats["recency_days"].to_numpy()) / 7
    fit = minimize(_bgnbd_negative_log_likelihood, np.zeros(4), args=(x, t_x, t), method="Nelder-Mead",
                   options={"maxiter": 5000, "xatol": 1e-8, "fatol": 1e-8})
    r, alpha, a, b = np.exp(fit.x)
    assert r == pytest.approx(0.243, abs=0.001)
    assert alpha == pytest.approx(4.414, abs=0.01)
    assert a == pytest.approx(0.793, abs=0.001)
    assert b == pytest.approx(2.426, abs=0.01)
    assert -fit.fun == pytest.approx(-9582.4, abs=0.1)
