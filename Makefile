# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates or refreshes the virtual environment itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck imports unit chaos-smoke chaos bench mutate venv clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded local AWS: exits by itself when done.
demo: $(STAMP)
	$(BIN)/python -m oab.controller.local.demo

## Everything CI checks: lint, format, types, import contracts, the whole test suite.
test: $(STAMP) lint typecheck imports unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy and import-linter cannot follow setuptools' editable finder for the folder mapping, so
# they read the packages through a tree of directory links (new files are seen at once).
TC := build/tc
$(TC)/oab:
	mkdir -p $(TC)/oab
	for p in controller leader queue; do ln -sfn ../../../$$p $(TC)/oab/$$p; done

typecheck: $(STAMP) $(TC)/oab
	MYPYPATH=$(TC) $(BIN)/mypy -p oab.controller -p oab.leader -p oab.queue

imports: $(STAMP) $(TC)/oab
	PYTHONPATH=$(TC) $(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider

## The CI subset of the chaos suite (also part of `make unit`).
chaos-smoke: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/test_chaos_smoke.py

## The long chaos run: every scenario, 5 iterations (about 30-40 min on 2 cores).
chaos: $(STAMP)
	$(BIN)/python chaos/run.py --scenario all --iterations 5 --seed 1 --replicas 3 --mass-agents 200 --report build/chaos

## Mutation testing of the guards (cosmic-ray; hours on 2 cores, never in CI: the CI subset is
## tests/test_mutants_ci.py). PACKAGES=queue limits it; reports in build/mutation/<package>/.
PACKAGES ?= queue leader controller
mutate: $(STAMP)
	$(BIN)/python mutation/run.py $(foreach p,$(PACKAGES),--package $(p))

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

## Hostile manifests through apply, the store and the reconciler's read (10,000 cases, ~1 h on
## 2 busy cores). Without --quick, accepted cases also go through diff, render and get (~3x).
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python fuzz/manifest_fuzz.py --count 10000 --seed 1 --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
