# One command surface for people and CI: make run, make test, make lint, make bench.
# make test-fast is the quick loop: unit tests only (no socket, no process, nothing slow).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv run test test-fast lint bench clean package package-report

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	@test -x $(BIN)/python || { echo "==> creating the virtual environment in $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> [1/2] upgrading pip"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "==> [2/2] installing the service with its local and dev extras (a minute or two on a fresh machine; pip lists each package)"
	@$(BIN)/python -m pip install --progress-bar off -e '.[local,dev]'
	@touch $(STAMP)
	@echo "==> ready: $(VENV)"

run: $(STAMP)
	$(BIN)/python -m local serve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "unit and not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check shared functions local tests bench deploy preview_client
	$(BIN)/cfn-lint template.yaml

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data build .build-cache

# Lambda folders, built for the template's Runtime and Architectures whatever runs the build
# (deploy/package.py): the function's dependency set from pyproject.toml, the shared core, its
# handler and the payload schema, byte-compiled; dependencies cached in .build-cache/.
# `make package` builds every function under build/package/<LogicalId>; package-report also
# prints sizes against the budgets (exit 1 on a miss).
BUILD_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

package:
	$(BUILD_PYTHON) -m deploy.package

package-report:
	$(BUILD_PYTHON) -m deploy.package --report

# `sam build` calls build-<LogicalId> for every function (Metadata: BuildMethod: makefile).
FUNCTIONS := EnqueueJobFunction EnqueueJobsFunction JobStatusFunction JobArtifactFunction QueueMetricsFunction \
	WorkerHealthFunction ListJobsFunction JobDetailFunction RetryJobFunction CancelJobFunction \
	RenderWorkerFunction HealthProbeFunction
$(addprefix build-,$(FUNCTIONS)):
	$(BUILD_PYTHON) -m deploy.package --function $(@:build-%=%) --into "$(ARTIFACTS_DIR)"
