# Everything a newcomer needs: `make serve` (set up, train if needed, serve) and `make test` (set up, run tests).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?= -q
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: setup lock serve train test pytest features load soak bench clean browser hey

# The venv is built from the lock (requirements/lock.txt, with hashes): every machine, CI and the Bento
# (requirements/serving.txt, a subset pinned to the same versions) install exactly what was tested.
$(STAMP): pyproject.toml requirements/lock.txt
	@echo "==> creating $(VENV) with $(PY) and installing the locked dependencies (first run only, 1-3 minutes)"
	$(PY) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements/lock.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

setup: $(STAMP)

# Re-resolve every dependency to the newest release that pyproject.toml's ranges allow, and rewrite both locks.
# Then `make setup` (the stamp depends on the lock) and `make test` before committing them.
LOCK_ARGS ?= --upgrade
lock: setup
	$(BIN)/uv pip compile pyproject.toml requirements/tools.in --extra test --extra profile --python-version 3.11 \
		--generate-hashes $(LOCK_ARGS) -q -o requirements/lock.txt
	$(BIN)/uv pip compile requirements/serving.in -c requirements/lock.txt --python-version 3.11 \
		--generate-hashes -q -o requirements/serving.txt

features: setup
	$(BIN)/recsys features

train: setup
	$(BIN)/recsys train

# `make serve PORT=8080`; HOST=0.0.0.0 listens on every interface (put it behind a proxy/firewall first)
serve: setup
	$(BIN)/recsys serve --host $(HOST) --port $(PORT)

load: setup
	$(BIN)/recsys loadtest

# 5 minutes, 32 users, RSS of every service process sampled; SOAK_ARGS="--duration 30m" for longer
soak: setup
	$(BIN)/recsys soak $(SOAK_ARGS)

bench: setup hey
	$(BIN)/recsys bench

# `recsys bench` loads the service with hey, a native load generator (Debian package `hey`). Installed with apt-get
# when missing and we are root; otherwise this only warns, and the benchmark stops saying what to install.
hey:
	@if command -v hey >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "==> installing hey for the benchmark (apt-get, first run only)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey >/dev/null \
			|| echo "==> WARNING: apt-get could not install hey; the benchmark will not run"; \
	else echo "==> WARNING: no hey on PATH; install it as root with 'apt-get install hey'" \
		"(or 'go install github.com/rakyll/hey@latest'), or the benchmark will not run"; fi

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

test: setup browser hey
	$(BIN)/ruff check .
	bash scripts/typecheck.sh
	$(BIN)/shellcheck scripts/*.sh .ci/run
	@$(MAKE) --no-print-directory pytest

# pytest exits 5 when it collected no tests. The default selection is the whole suite, so there that means the suite
# itself is broken (a conftest that hides the tests, a moved folder): a failure. A PYTEST_ARGS given on the command
# line or in the environment may narrow the run to nothing on purpose (`-k` on another branch's test): that passes,
# but says so loudly, so it cannot pass for a green suite. (tests/test_make.py)
pytest:
	@$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then \
		if [ "$(origin PYTEST_ARGS)" = file ]; then \
			echo "==> FAILED: pytest collected no tests from the whole suite (exit 5)"; exit 5; fi; \
		echo "==> NO TESTS RAN: PYTEST_ARGS='$(PYTEST_ARGS)' selected none (pytest exit 5, passed as asked)"; exit 0; \
	fi; exit $$status

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
