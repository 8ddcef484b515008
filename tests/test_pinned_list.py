"""Behaviour kept through the redesign: a model trained and a list scored by the code BEFORE it.

``tests/fixtures/pinned/`` holds a model bundle trained by commit ff6a324 (the last commit before
the one-recipe/one-spec/one-I/O redesign) and the ``priority_list.csv`` / ``scores.parquet`` that
code published for seeded demo data (``make_pin.py`` in the same folder is the script that made
them, run from a checkout of that commit). Today's code must load that bundle and, on the same
data and settings, publish byte-identical files: the redesign moved code, it did not change what a
retention team receives. (The model itself has changed since — calibration, candidates — which is
why the model is pinned, not retrained.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnflow.features.contracts import load_tables
from churnflow.features.demo import generate_demo_data, write_demo_data
from churnflow.features.settings import load_settings
from churnflow.serving.publish import write_csv
from churnflow.serving.weekly import score_week
from churnflow.training.bundle import ModelBundle

PINNED = Path(__file__).with_name("fixtures") / "pinned"


@pytest.fixture(scope="module")
def weekly(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pinned")
    (root / "churnflow.toml").write_text((PINNED / "churnflow.toml").read_text()
                                         + "holdout_share = 0.0\n")  # lists before control groups
    write_demo_data(generate_demo_data(1500, seed=7, end_date="2026-11-07"), root / "data")
    settings = load_settings(root / "churnflow.toml")
    bundle = ModelBundle.load(PINNED / "bundle")
    outputs = score_week(load_tables(settings), pd.Timestamp("2026-10-31"), bundle, "1", settings,
                         force=True)  # the old run published without a drift gate
    return root, outputs


def test_priority_list_is_byte_identical_to_the_pre_redesign_code(weekly) -> None:
    root, outputs = weekly
    write_csv(outputs.priority_list, root / "priority_list.csv")
    assert (root / "priority_list.csv").read_bytes() == (PINNED / "priority_list.csv").read_bytes()


def test_scores_match_the_pre_redesign_code(weekly) -> None:
    """Same customers, tiers, segments and order; probabilities within 1e-4 (not bytes): the old
    code computed the sigmoid of XGBoost's float32 margin in float32, the kernel in float64, so
    the unrounded probabilities moved by up to 2e-5 where the isotonic map is steep. The list
    people read rounds to 4 decimals and is byte-identical (the test above)."""
    _, outputs = weekly
    old, new = pd.read_parquet(PINNED / "scores.parquet"), outputs.scores
    exact = ["customer_id", "as_of", "risk_tier", "segment", "model_version"]
    pd.testing.assert_frame_equal(new[exact], old[exact])
    for col in ("churn_probability", "value_at_risk", "priority_score"):
        assert np.allclose(new[col], old[col], rtol=1e-4, atol=1e-4), col
