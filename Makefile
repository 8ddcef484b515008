# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   - create .venv, install, generate demo data, run the whole pipeline
#   make test   - create/update .venv with dev extras, run the test suite
# Installing uses uv (pip-installable, ~10x faster than pip at resolving and installing) when pip
# can fetch it, and plain pip otherwise (or when uv fails, e.g. behind a pip-only index mirror). --compile-bytecode: without .pyc files (machines that set
# PYTHONDONTWRITEBYTECODE=1) every churnflow command would spend seconds compiling its imports.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export UV_LINK_MODE ?= copy
# Tests install the Dask extra too, so CI runs the Dask engine's parity and fault tests (a
# variable: a comma inside $(call ...) would split its argument).
TEST_EXTRAS := .[dev,dask]
install = if [ -x $(BIN)/uv ] && $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode $(1); \
	then :; else $(BIN)/python -m pip install -q $(1); fi

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv \
		|| { echo "uv not available: installing with pip"; $(BIN)/python -m pip install -q --upgrade pip; }

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(call install,-e .)
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(call install,-e '$(TEST_EXTRAS)')
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/churnflow demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf outputs mlruns data/demo
