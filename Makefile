# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
# CPU-only machines get the pinned CPU torch from constraints-cpu.txt; on a CUDA machine install
# your own torch first and run `make install CONSTRAINTS=` to keep it.

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints-cpu.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.prune2drive-installed

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): setup.py setup.cfg $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) -e ".[test,postgres]"
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy prune2drive_ros

test: lint
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/prune2drive demo

bench: install
	$(BIN)/prune2drive bench tfps --json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
