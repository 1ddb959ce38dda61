# eddy: quick start
#   make demo   starts the embedded broker, the daemon and a replay producer on a real data set
#   make test   the whole suite (integration tests against the real broker and a real Prometheus)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

# Debian's prometheus, for the scrape test (installed when missing and apt is usable).
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "prometheus not installed and apt-get unusable: the scrape test will fail"; fi; }

demo: $(STAMP)
	$(VENV)/bin/eddy demo

test: $(STAMP) prometheus
	$(PY) -m ruff check daemon learners connectors tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/bandits.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/sidecar.py
	$(PY) benchmarks/paging.py
	$(PY) benchmarks/groupwise.py
	$(PY) benchmarks/sor.py
	$(PY) benchmarks/submodular.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
