"""churnflow installs as one namespace (issue 8): nothing called ``features`` or ``flows`` lands
in site-packages, where it would shadow, or be shadowed by, other projects' modules."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("features", "training", "serving", "flows")


def test_every_installed_package_lives_under_the_churnflow_namespace() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p.startswith("churnflow.") for p in config["packages"]), config["packages"]
    assert config["package-dir"] == {f"churnflow.{f}": f for f in FOLDERS}


def test_outside_the_repository_only_the_namespaced_names_import(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u, json\n"
        f"print(json.dumps({{n: u.find_spec(n) is not None for n in {list(FOLDERS)!r}}}))\n"
        "import churnflow.features.settings, churnflow.flows.cli\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == '{"features": false, "training": false, "serving": false, "flows": false}'
