# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robot_rl-installed
export MUJOCO_GL ?= egl
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint bench venv clean

$(STAMP): pyproject.toml requirements/constraints.txt scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m robot_rl demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) -m robot_rl.bench foundation --out reports/bench-foundation.json

clean:
	rm -rf reports runs .pytest_cache
