# One entry point for people and CI alike.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The shipped targets.yml reads the local MySQL target's password from here; empty is fine for a first look.
export MYSQL_EXPORTER_PASSWORD ?=

.PHONY: install run test check bench clean

$(BIN)/sqlprobe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/sqlprobe

run: install
	$(BIN)/sqlprobe --targets targets.yml --queries queries.yml --bind 127.0.0.1:9104

test: install
	$(BIN)/python -m pytest

# The benchmark (tests/bench/, not collected by pytest): `make bench BENCH_ARGS="--targets 2000 --interval 15"`.
bench: install
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

check: install
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
