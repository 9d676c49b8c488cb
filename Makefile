# KeyCore: `make run` runs it, `make test` tests it. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# the suite in parallel (pytest-xdist: one test process per core, at most four); PYTEST_ARGS= for one process
PYTEST_ARGS ?= -n auto --maxprocesses 4
ARGS ?=
BENCH_ARGS ?=

.PHONY: run manage test lint format bench tour clean

$(BIN)/python:
	@echo "==> Creating the virtual environment $(VENV) (first run only)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	@echo "==> Installing KeyCore and its dependencies into $(VENV) (first run only: about a minute)"
	$(BIN)/python -m pip install -q -e ".[demo]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "==> Installing KeyCore and its test dependencies into $(VENV)"
	$(BIN)/python -m pip install -q -e ".[demo,test,bench]"
	touch $@ $(VENV)/.installed-run

# exec: the signal that stops make (Ctrl-C, SIGTERM) reaches run.py, which stops what it started
run: $(VENV)/.installed-run
	@exec $(BIN)/python scripts/run.py

# any management command against the same embedded default as `make run`, e.g.
#   make manage ARGS="create_api_key billing-service --scope crypto"
manage: $(VENV)/.installed-run
	@DEBUG=$${DEBUG-1} exec $(BIN)/python manage.py $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# every benchmark in bench/ (quick mode; SQLite, or PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set), then
# docs/benchmarks.md and its plot rewritten. BENCH_ARGS="--full" for each script's own defaults,
# "--only crypto,api", "--profile furthest" to profile the figure furthest from its target.
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench.runner --write --json var/bench-results.json $(BENCH_ARGS)

# the journey of docs/tour.md, in Chromium, its screenshots written to docs/tour/
tour: $(VENV)/.installed-test
	KEYCORE_TOUR_DIR=docs/tour $(BIN)/python -m pytest tests/browser/test_journey.py $(PYTEST_ARGS)

clean:
	rm -rf var/broker var/cache var/staticfiles .pytest_cache
