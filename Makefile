# One command surface for people and CI: make run, make test, make lint, make bench.
# make test-fast is the quick loop: unit tests only (no socket, no process, nothing slow).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv run test test-fast lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m local serve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "unit and not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check shared functions local tests bench
	$(BIN)/cfn-lint template.yaml

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data

# `sam build` calls build-<LogicalId> for every function (Metadata: BuildMethod: makefile):
# the runtime dependencies from pyproject.toml plus the shared core, the handlers and the
# payload schema, all under one import root.
FUNCTIONS := EnqueueJobFunction JobStatusFunction JobArtifactFunction QueueMetricsFunction \
	WorkerHealthFunction RenderWorkerFunction HealthProbeFunction
$(addprefix build-,$(FUNCTIONS)):
	$(PYTHON) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > "$(ARTIFACTS_DIR)/requirements.txt"
	$(PYTHON) -m pip install --quiet --target "$(ARTIFACTS_DIR)" -r "$(ARTIFACTS_DIR)/requirements.txt"
	rm "$(ARTIFACTS_DIR)/requirements.txt"
	cp -r shared functions schemas "$(ARTIFACTS_DIR)/"
