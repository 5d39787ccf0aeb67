# The README's commands. Each target sets itself up: a .venv with the project installed.
VENV ?= .venv
PY := $(VENV)/bin/python
# `mlflow run` and the nested steps call `python`: make it the venv's.
export PATH := $(abspath $(VENV))/bin:$(PATH)
# No conda on these machines: `--env-manager local` is the only way to say so (no variable sets it).
MLFLOW_RUN := mlflow run . --env-manager local
PYTEST_ARGS ?=

.PHONY: demo test lint bench setup lock mlproject docs
setup: $(VENV)/.installed

# Every install comes from the one lock (hashes checked): the venv, CI, python_env.yaml and both images.
# pip's own resolver never runs here, so two installs on two days get the same versions.
LOCK := requirements.lock
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --no-deps
# The lock is for Python 3.11: python3.11 where there is one, else a python3 that is 3.11 (one line otherwise).
PYTHON311 := $(shell command -v python3.11 || echo python3)
$(VENV)/.installed: $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON311) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and \
		"make setup: the lock is for Python 3.11; $(PYTHON311) is " + sys.version.split()[0] + ", install python3.11")'
	test -x $(PY) || $(PYTHON311) -m venv $(VENV)
	$(PIP_INSTALL) --require-hashes -r $(LOCK)
	$(PIP_INSTALL) --no-build-isolation -e .
	touch $@

# The one command that updates the lock (newest versions pyproject.toml allows), and the server image's
# subset of it. Commit both files; `make setup` then installs them.
PIP_COMPILE := $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links
lock: setup
	$(PIP_COMPILE) --upgrade --extra dev --output-file $(LOCK) pyproject.toml
	$(PIP_COMPILE) --output-file docker/mlflow-server.lock docker/mlflow-server.in

demo: setup
	$(MLFLOW_RUN) -e finetune

# Two workers; a folder whose tests share a server, a cluster or a demo project stays on one of them.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check simclr_s2 entrypoints tests benchmarks scripts

# Each script prints its own figures; the last step prints all of their headline figures in one table.
BENCH_TABLE := $(CURDIR)/.bench/figures.jsonl
bench: setup
	mkdir -p $(dir $(BENCH_TABLE)) && rm -f $(BENCH_TABLE)
	for b in benchmarks/bench_*.py; do echo "== $$b"; BENCH_TABLE=$(BENCH_TABLE) $(PY) $$b || exit 1; done
	$(PY) benchmarks/figures.py $(BENCH_TABLE)

# MLproject and the manual's parameter tables are generated from simclr_s2/settings/specs.py (tests check them).
mlproject: setup
	$(PY) -m simclr_s2.app.mlproject > MLproject

docs: setup
	$(PY) -m simclr_s2.app.manual

include docker/server.mk
server: setup
