"""The MLflow pyfunc churn model, logged as code (MLflow 3 "models from code").

MLflow's XGBoost flavour turns categorical columns into strings and then rejects them, so this
small PythonModel wraps the ModelBundle instead: it restores the training dtypes from the recorded
FeatureSchema (strings or categories both work; unseen levels become missing) and returns
calibrated probabilities. The file is logged by path, so nothing is pickled; the bundle's JSON
files travel as the model's ``bundle`` artifact and the project code via ``code_paths``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

BUNDLE_ARTIFACT = "bundle"


class ChurnModel(PythonModel):
    def load_context(self, context: Any) -> None:
        # Imported here: MLflow adds the logged code_paths to sys.path before loading.
        from training.bundle import ModelBundle

        self.bundle = ModelBundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        out = pd.DataFrame({"churn_probability": self.bundle.predict_proba(frame)}, index=frame.index)
        if "customer_id" in frame.columns:
            out.insert(0, "customer_id", frame["customer_id"].to_numpy())
        return out


mlflow.models.set_model(ChurnModel())
