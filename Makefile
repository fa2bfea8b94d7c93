# Everything a newcomer needs: `make serve` (set up, train if needed, serve) and `make test` (set up, run tests).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?= -q

.PHONY: setup serve train test features load soak bench clean browser

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

# 5 minutes, 32 users, RSS of every service process sampled; SOAK_ARGS="--duration 30m" for longer
soak: setup
	$(BIN)/recsys soak $(SOAK_ARGS)

bench: setup
	$(BIN)/recsys bench

# The page test drives Debian's headless Chromium through its chromedriver (tests/browser.py). Installed with apt-get
# when missing and we are root; otherwise this only warns, and that test fails saying what to install.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "==> installing chromium and chromium-driver for the page test (apt-get, first run only)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
			|| echo "==> WARNING: apt-get could not install chromium chromium-driver; the page test will fail"; \
	else echo "==> WARNING: no /usr/bin/chromium or /usr/bin/chromedriver; install them as root with" \
		"'apt-get install chromium chromium-driver', or the page test will fail"; fi

# pytest exits 5 when it collects no tests; that is not a failure of the code under test.
test: setup browser
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf var .pytest_cache .hypothesis catboost_info

# Build the Bento from the model pair in your BentoML store (BENTOML_HOME, default ~/bentoml; a tiny stand-in pair is
# trained there, with a warning, only when it has none), `bentoml containerize` it (docker if a daemon answers, else
# podman as root, installed and given a locally built base image when needed), run it on loopback and check /recommend
# against `bentoml serve` of the same Bento. Exits 0 only when that round trip passed; otherwise it names the failed
# phase. Settings (CONTAINER_BENTOML_HOME, CONTAINER_BACKEND, ports...) are described in scripts/containerize.sh.
.PHONY: container
container: setup
	bash scripts/containerize.sh
