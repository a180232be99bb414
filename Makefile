# The two commands of the quickstart: `make repro` and `make test`. Each does its own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export DVC_NO_ANALYTICS := 1

.PHONY: setup test test-fast lint repro bench gpu-check clean

setup: $(STAMP) $(NODE_STAMP)

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# OpenSeadragon for the damage-map viewer (copied into each IIIF output), from the npm lock file.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The unit tier: no Slurm cluster, MLflow server, Chromium, `dvc repro` or training for epochs.
FAST := not (slurm or server or browser or pipeline or training or slow)
test-fast: lint
	$(BIN)/pytest -m "$(FAST)"

repro: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	$(BIN)/heritageseg summary
	@echo
	@echo "Every run is in MLflow: $(BIN)/heritageseg ui   then open http://127.0.0.1:5000"

bench: setup
	$(BIN)/heritageseg bench data

# On a machine with a GPU: prove the CUDA paths, write reports/gpu.md (README "On a GPU").
gpu-check: setup
	$(BIN)/heritageseg bench gpu

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
