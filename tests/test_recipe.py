"""The training recipe runs from a Python session: no Prefect, no MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from features.contracts import load_tables
from features.settings import load_settings
from tests.conftest import write_project
from training.recipe import TrainedModel, train_model


def test_train_model_without_prefect_gives_a_complete_model(tmp_path: Path) -> None:
    config = write_project(tmp_path / "project", n_customers=600)
    settings = load_settings(config, training={"n_trials": 2, "max_boost_rounds": 60})
    tables = load_tables(settings)

    model = train_model(tables, settings, plot_dir=tmp_path / "plots")

    assert isinstance(model, TrainedModel)
    bundle = model.bundle
    assert bundle.segments and bundle.reference["features"] and bundle.dictionary
    assert bundle.metrics["test"]["roc_auc"] == model.evaluation.metrics["roc_auc"]
    assert model.evaluation.metrics["roc_auc"] > 0.6
    assert len(model.test) == model.evaluation.n_test
    assert set(model.importance["feature"]) == set(bundle.schema.features)
    assert {name for name, _, _ in model.checks} >= {"pii_not_features", "invariant_to_pii"}
    assert all(path.exists() for path in model.plots.values()) and "gains" in model.plots
    assert model.fingerprint == tables.fingerprint()
    assert model.tuning.n_run_now == 2
    proba = bundle.predict_proba(model.test)
    assert np.all((proba >= 0) & (proba <= 1))


def test_the_recipe_imports_neither_prefect_nor_mlflow() -> None:
    code = "import sys, training.recipe; print(sorted({'prefect', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
