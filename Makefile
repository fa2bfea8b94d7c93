# Everything a newcomer needs: `make serve` (set up, train if needed, serve) and `make test` (set up, run tests).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?= -q

.PHONY: setup serve train test features load bench clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) with $(PY) and installing the project (first run only, a few minutes)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

features: setup
	$(BIN)/recsys features

train: setup
	$(BIN)/recsys train

serve: setup
	$(BIN)/recsys serve

load: setup
	$(BIN)/recsys loadtest

bench: setup
	$(BIN)/recsys bench

# pytest exits 5 when it collects no tests; that is not a failure of the code under test.
test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf var .pytest_cache .hypothesis catboost_info

# Build the Bento, `bentoml containerize` it (docker if a daemon answers, else podman as root, installed and given a
# locally built base image when needed), run it on loopback and check /recommend against `bentoml serve` of the same
# Bento. Settings (CONTAINER_TRAIN_SIZE, CONTAINER_BACKEND, ports...) are described in scripts/containerize.sh.
.PHONY: container
container: setup
	bash scripts/containerize.sh
