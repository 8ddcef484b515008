"""Registry: what a training run leaves in MLflow, the gate's rule on rows the champion has seen,
and the errors a user gets for a missing champion or version. Real MLflow store in a tmp folder."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from churnflow.features.settings import Settings
from churnflow.training.evaluate import attach_metrics, bundle_metrics, evaluate
from churnflow.training.fit import fit_tuned
from tests.test_training import SCHEMA, make_split


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return make_split(n=600)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


def _settings(root: Path, name: str) -> Settings:
    return Settings(root=root, tracking={"model_name": name}, training={"n_threads": 1})


def _model(settings: Settings, data, depth: int = 3, rounds: int = 20, noise: float = 0.0):
    train, valid, test = data
    if noise:
        flip = np.random.default_rng(0).random(len(train)) < noise
        train = train.assign(label=np.where(flip, 1 - train["label"], train["label"]))
    bundle = fit_tuned(train, valid, SCHEMA, settings, {"max_depth": depth}, rounds)
    evaluation = evaluate(bundle, train, test, settings)
    return attach_metrics(bundle, evaluation), evaluation


def test_run_has_datasets_signature_synthetic_example_and_a_training_experiment(data, root) -> None:
    import mlflow

    from churnflow.training.registry import (
        EXPERIMENT_KIND,
        MODEL_TRAINING,
        log_and_register,
        registry_client,
    )

    settings = _settings(root, "contents-test")
    train, _, test = data
    bundle, evaluation = _model(settings, data)
    result = log_and_register(settings, bundle, evaluation, test, train=train)
    client = registry_client(settings)

    experiment = client.get_experiment_by_name(settings.tracking.experiment)
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_TRAINING
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    inputs = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
              for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "test"}
    for dataset in inputs.values():
        columns = [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]]
        assert columns == [*SCHEMA.features, "label"], "no ids, dates or personal columns in a dataset"
    assert json.loads(inputs["test"].profile)["num_rows"] == len(test)

    version = client.get_model_version("contents-test", result.version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(root / "dl"),
                                                     tracking_uri=settings.tracking_uri))
    model = mlflow.models.Model.load(local / "MLmodel")
    assert not (local / "code").exists() and model.flavors["python_function"]["code"] is None, "no code_paths"
    assert [c.name for c in model.signature.inputs.inputs] == [*SCHEMA.features, "customer_id"]
    example = pd.DataFrame(**json.loads((local / "input_example.json").read_text()))
    assert len(example) == 1 and example.loc[0, "plan"] == "basic"
    assert example.loc[0, "recency_days"] == pytest.approx(test["recency_days"].median())
    real_rows = test[SCHEMA.numeric].round(9).apply(tuple, axis=1)
    assert tuple(example[SCHEMA.numeric].round(9).iloc[0]) not in set(real_rows), "never a customer's row"


def test_fitted_on_test_rows_rule() -> None:
    from churnflow.training.registry import fitted_on_test_rows

    test = pd.DataFrame({"as_of": pd.to_datetime(["2024-10-02", "2024-10-02"])})
    champion = SimpleNamespace  # only ``fitted_through`` is read
    assert not fitted_on_test_rows(champion(fitted_through="2024-07-01"), test, 90)  # labels end 09-29
    assert fitted_on_test_rows(champion(fitted_through="2024-07-10"), test, 90)  # labels reach 10-08
    assert fitted_on_test_rows(champion(fitted_through="2024-10-02"), test, 90)  # refit on the test date
    assert fitted_on_test_rows(champion(fitted_through="all rows"), test, 90)  # snapshot table
    assert not fitted_on_test_rows(champion(fitted_through=""), test, 90)  # before refits were recorded


@pytest.mark.parametrize("seen", [False, True])
def test_gate_never_judges_the_champion_on_rows_it_was_fitted_on(data, root, seen) -> None:
    from churnflow.training.registry import decide_promotion, log_and_register

    settings = _settings(root, f"rule-test-{seen}")
    _, _, test = data
    champion, champion_eval = _model(settings, data)
    test_day = pd.Timestamp(test["as_of"].min())
    # refit through the test date (saw these rows), or fitted on labels that end long before them
    fitted_through = test_day if seen else test_day - pd.Timedelta(days=settings.churn.horizon_days + 30)
    champion = replace(champion, fitted_through=fitted_through.date().isoformat())
    first = log_and_register(settings, champion, champion_eval, test)
    assert first.promoted

    _, challenger_eval = _model(settings, data, depth=2, rounds=10, noise=0.3)
    # a different test set than the champion's own: only re-scoring gives the champion's metric on it
    later = test.sample(frac=0.7, random_state=1)
    promote, reason, champion_metric = decide_promotion(settings, challenger_eval, later, first.version)
    objective = settings.training.objective
    if seen:
        assert champion_metric == pytest.approx(champion_eval.metrics[objective])
        assert "recorded held-out" in reason and "not re-scored" in reason
    else:
        assert champion_metric == pytest.approx(bundle_metrics(champion, later)[objective])
        assert "re-scored on the same test rows" in reason
    assert not promote and "does not beat champion" in reason


def test_logged_model_predicts_where_no_churnflow_package_can_be_imported(data, root) -> None:
    """No code_paths: the model is self-contained, so a server with its own ``features`` or
    ``training`` module neither shadows ours nor is shadowed."""
    from churnflow.training.registry import log_and_register

    settings = _settings(root, "standalone-test")
    _, _, test = data
    bundle, evaluation = _model(settings, data)
    log_and_register(settings, bundle, evaluation, test)
    test.to_parquet(root / "standalone_in.parquet")
    code = textwrap.dedent(f"""
        import sys
        class Blocked:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{"churnflow", "features", "training", "serving", "flows"}}:
                    raise ImportError("churnflow package imported by the model: " + name)
        sys.meta_path.insert(0, Blocked())
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({settings.tracking_uri!r})
        model = mlflow.pyfunc.load_model("models:/standalone-test@champion")
        out = model.predict(pd.read_parquet({str(root / "standalone_in.parquet")!r}))
        out.to_parquet({str(root / "standalone_out.parquet")!r})
        """)
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    out = pd.read_parquet(root / "standalone_out.parquet")
    np.testing.assert_allclose(out["churn_probability"].to_numpy(), bundle.predict_proba(test), atol=1e-12)


def test_missing_champion_or_version_names_the_model_versions_and_the_fix(data, root) -> None:
    from churnflow.training.registry import (
        ModelVersionNotFoundError,
        NoChampionError,
        load_bundle,
        registry_client,
    )

    empty = _settings(root, "nothing-here")
    with pytest.raises(NoChampionError, match=r"no champion model registered under 'nothing-here'.*churnflow train"):
        load_bundle(empty)
    with pytest.raises(ModelVersionNotFoundError, match=r"'nothing-here' has no version 999.*no versions yet"):
        load_bundle(empty, "999")

    settings = _settings(root, "versions-test")
    client = registry_client(settings)
    client.create_registered_model("versions-test")
    for _ in range(2):
        client.create_model_version("versions-test", source=str(root), run_id=None)
    with pytest.raises(NoChampionError, match=r"versions 1, 2 exist, none promoted.*--model-version"):
        load_bundle(settings)
    with pytest.raises(ModelVersionNotFoundError, match=r"no version 999 .*versions that exist: 1, 2\. Leave out"):
        load_bundle(settings, "999")


def test_a_retried_registration_completes_the_same_run_and_version(data, root, monkeypatch) -> None:
    """A register task retried after failing part-way (here: after the version was created, while
    the gate's tags were written) must not register a second version nor start a second run."""
    import churnflow.training.registry as registry

    settings = _settings(root, "retry-test")
    _, _, test = data
    bundle, evaluation = _model(settings, data)
    real = registry._apply_decision
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("tracking server went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, "_apply_decision", flaky)
    with pytest.raises(ConnectionError):
        registry.log_and_register(settings, bundle, evaluation, test, registration_key="flow-run-1")
    result = registry.log_and_register(settings, bundle, evaluation, test, registration_key="flow-run-1")

    client = registry.registry_client(settings)
    versions = client.search_model_versions("name = 'retry-test'")
    assert [str(v.version) for v in versions] == [result.version] == ["1"]
    assert versions[0].run_id == result.run_id and client.get_run(result.run_id).info.status == "FINISHED"
    runs = client.search_runs([client.get_experiment_by_name(settings.tracking.experiment).experiment_id],
                              filter_string=f"tags.`{registry.REGISTRATION_KEY}` = 'flow-run-1'")
    assert len(runs) == 1
    assert str(client.get_model_version_by_alias("retry-test", "champion").version) == "1"
    another = registry.log_and_register(settings, bundle, evaluation, test, registration_key="flow-run-2")
    assert another.version == "2"  # a new training run is a new version, as before


def test_shap_plots_use_their_own_seeded_generator(data, root, tmp_path) -> None:
    """shap's beeswarm jitter takes churnflow's seed: no FutureWarning about NumPy's global RNG
    (seeded here as another library might), and the same seed draws the same plot."""
    import warnings

    from churnflow.training.explain import explain

    settings = _settings(root, "shap-test")
    _, _, test = data
    bundle, _ = _model(settings, data)
    np.random.seed(1)  # noqa: NPY002 - the global seed another library might set: the case under test
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        first = explain(bundle, test, tmp_path / "a", seed=3, top_dependence=1).plots
        second = explain(bundle, test, tmp_path / "b", seed=3, top_dependence=1).plots
    assert first["shap_beeswarm"].read_bytes() == second["shap_beeswarm"].read_bytes()
