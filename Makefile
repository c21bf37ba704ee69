# The two commands (README): `make run` and `make test`. Both set up what they need on a fresh
# machine that has Python 3.11+, pip and apt-get.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests run for real: systemd-analyze (unit check), the node exporter,
# Prometheus and promtool (rule export checks, parity, dashboards), Alertmanager (failover e2e),
# PostgreSQL (the shared journal; tests/support/pgserver.py runs initdb from /usr/lib/postgresql/*/bin,
# and pg_ctlcluster on PATH tells the package is there), Chromium (a drill's report.html laid out
# headless: tests/simulate/test_report_layout.py).
APT_PACKAGES := systemd prometheus-node-exporter prometheus prometheus-alertmanager postgresql \
  chromium
APT_COMMANDS := systemd-analyze prometheus-node-exporter promtool prometheus prometheus-alertmanager \
  pg_ctlcluster chromium

.PHONY: setup system-deps run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(STAMP)

# Installs the Debian packages only when one of their commands is missing (needs root or sudo).
system-deps:
	@missing=""; for c in $(APT_COMMANDS); do command -v $$c >/dev/null || missing=yes; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

# Where `make run` serves: make run LISTEN=127.0.0.1:9988
LISTEN ?= 127.0.0.1:9877

run: setup
	$(BIN)/srd run --sandbox --listen $(LISTEN)

lint: setup
	$(BIN)/ruff check srd tests bench
	$(BIN)/ruff format --check srd tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup system-deps lint
	$(BIN)/pytest

bench: setup system-deps
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
