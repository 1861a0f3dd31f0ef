# aanbench: the two commands (see README). Both create .venv when it is missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every package `make setup` installs, pinned with hashes (pip-compile from
# pyproject.toml's dependencies + the test extra); `make lock` remakes it.
LOCK   := requirements.lock
# pip-tools in a venv of its own (pinned: pip-tools follows pip's internals)
LOCK_VENV  := $(VENV)/lock-tools
LOCK_TOOLS := pip==26.3 pip-tools==7.7.0

.PHONY: setup demo test bench clean lock

setup: $(STAMP)

# The locked packages (pip checks every file against the lock's hashes), then
# aanbench itself editable, without dependencies.
$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

# Remake requirements.lock after changing dependencies in pyproject.toml:
# keeps the current pins where they still fit; `make lock UPGRADE=1` takes the
# newest versions the ranges allow. Review the diff, then `make setup`.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q $(LOCK_TOOLS); }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe \
	  --strip-extras --extra test --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade) \
	  -o $(LOCK) pyproject.toml

# `make demo DEMO_ARGS=--rerun` trains every experiment again (see `aanbench demo --help`)
demo: $(STAMP)
	$(VENV)/bin/aanbench demo $(DEMO_ARGS)

# The whole suite on pytest-xdist workers: one per usable CPU and one more,
# which takes the CPU a worker leaves idle while it waits (Ray starting,
# fresh processes, Ctrl-C tests); on two cores 3 workers took 12 min 20 s
# against 13 min 30 s for 2. tests/conftest.py groups what must share a
# worker (Ray, the full demo, a module's fixtures) and orders the groups
# longest first, in which order xdist hands them out (--no-loadscope-reorder).
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: every test
# that starts a fresh `aanbench` process would otherwise compile the package
# again. `make test PYTEST_ARGS='-m "not slow"'` for the quick part;
# `make test TEST_WORKERS=N` for another number of workers.
test: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q -n $(or $(TEST_WORKERS),$$($(PY) -c 'import os; print(len(os.sched_getaffinity(0)) + 1)')) \
	  --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pytest tests/benchmarks --benchmark-enable -q

clean:
	rm -rf $(VENV) .aanbench-demo
