# make demo: set up, then the synthetic shop end to end.  make test: set up, then the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# Re-installs only when the project's dependencies change; creates .venv if missing.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/recscope demo --out demo-out

# Two test processes (pytest-xdist), a file each at a time so a file's module fixtures are built
# once: most tests wait on servers, browsers and subprocesses, so two share two cores well.
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: setup
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf demo-out .pytest_cache
