# Two commands do all set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 resolves to the CPU build on CPU-only machines here; on a GPU machine
# PyPI's build carries CUDA. CPU-only elsewhere: make install TORCH_INDEX=<PyTorch CPU index>
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo lint test test-fast bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the dependencies change; torch first so nothing pulls a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) jobs/demo.py

# The rules are pinned in pyproject.toml; part of make test, so CI checks them.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The unit tier alone: no Ray, under a minute.
test-fast: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Every benchmark (bench_heal and bench_demo take most of an hour each), then one table of all goals.
bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
	$(PY) benchmarks/goals.py

clean:
	rm -rf .rayinfra benchmarks/.work .pytest_cache
