# Everything a newcomer needs: `make serve` (set up, train if needed, serve) and `make test` (set up, run tests).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?= -q

.PHONY: setup serve train test features clean

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

# pytest exits 5 when it collects no tests; that is not a failure of the code under test.
test: setup
	$(BIN)/pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf var .pytest_cache catboost_info
