# One entry point for people and CI alike.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test test-fast check bench bench-status-page screenshot clean peers dist image

# Serving needs only the runtime dependencies (`make run`); the tests and linters add the dev extras (`make install`).
$(BIN)/sqlprobe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-extras: $(BIN)/sqlprobe
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.dev-extras

# The exporters sqlprobe-convert is checked against (tests/convert/test_convert_query_exporter.py), in their own
# virtualenv: never dependencies of sqlprobe. .ci/run makes it before `make test`; the tests skip without it.
PEERS ?= .venv-peers
QUERY_EXPORTER_VERSION := 5.0.2
$(PEERS)/bin/query-exporter: Makefile
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet 'query-exporter==$(QUERY_EXPORTER_VERSION)' 'PyMySQL==1.1.2'
	touch $@

peers: $(PEERS)/bin/query-exporter

run: $(BIN)/sqlprobe
	$(BIN)/sqlprobe --targets targets.yml --queries queries.yml --bind 127.0.0.1:9104

test: install
	$(BIN)/python -m pytest

# All but the slow suites (tests/e2e, tests/faults, tests/browser: marked slow by their conftest.py), for the inner loop.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# The benchmark (tests/bench/, not collected by pytest): `make bench BENCH_ARGS="--targets 2000 --interval 15"`.
bench: install
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

# The status page's size and render time with 2,000 probed targets (tests/bench/status_page.py).
bench-status-page: install
	$(BIN)/python -m tests.bench.status_page $(BENCH_ARGS)

# docs/status-page.png, taken by headless Chromium (chromium and chromium-driver installed).
screenshot: install
	$(BIN)/python -m tests.screenshot

check: install
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Containerfile

# A wheel and an sdist in dist/ (docs/deployment.md): `pipx install dist/sqlprobe-*.whl`.
dist: install
	rm -rf dist build
	$(BIN)/python -m build --outdir dist .

# The container image (Containerfile; docs/deployment.md). BASE=... builds on another Python image, e.g. one made
# offline (tests/deploy/images.py); PODMAN_ARGS passes more to `podman build`.
IMAGE ?= sqlprobe:latest
BASE ?= python:3.11-slim
CONTAINER_TOOL ?= podman
image:
	$(CONTAINER_TOOL) build $(if $(filter podman,$(CONTAINER_TOOL)),--format docker) --build-arg BASE=$(BASE) --build-arg VERSION=$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) $(PODMAN_ARGS) -t $(IMAGE) -f Containerfile .

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache .mypy_cache .ruff_cache
