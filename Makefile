# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
# CPU-only machines get the pinned CPU torch from constraints-cpu.txt; on a CUDA machine install
# your own torch first and run `make install CONSTRAINTS=` to keep it.

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints-cpu.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.prune2drive-installed
ROS_STAMP := $(VENV)/.prune2drive-ros-installed
INTERFACE_FILES := $(wildcard interfaces/prune2drive_interfaces/*/*.msg \
	interfaces/prune2drive_interfaces/*/*.srv interfaces/prune2drive_interfaces/*/*.action) \
	interfaces/prune2drive_interfaces/CMakeLists.txt interfaces/prune2drive_interfaces/package.xml

.PHONY: install install-ros test test-quick lint demo bench clean

install: $(STAMP)

$(STAMP): setup.py setup.cfg $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) -e ".[test,postgres,nuscenes]"
	# the devkit pins numpy<2 but reads its JSON tables fine with numpy 2 (setup.py says why)
	$(BIN)/python -m pip install --quiet --no-deps "nuscenes-devkit>=1.1"
	touch $@

# The node's tests: ROS 2 Jazzy's rclpy from PyPI wheels and our interfaces built into the venv
# (tools/build_interfaces.sh). Where no wheels exist (not CPython 3.11 on x86_64 Linux) the
# extra installs nothing and the node's tests skip, saying why.
install-ros: $(ROS_STAMP)

$(ROS_STAMP): $(STAMP) $(INTERFACE_FILES) tools/build_interfaces.sh tools/wheel_python_includes.cmake
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) -e ".[ros-test]"
	if $(BIN)/python -c "import rclpy" 2>/dev/null; then \
		tools/build_interfaces.sh $(VENV); \
	else \
		echo "no ROS 2 wheels for this Python or platform: the node's tests will skip"; \
	fi
	touch $@

lint: install install-ros
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy prune2drive_ros

# The whole suite, as CI runs it. Its cache (trained models, bags) is .test-cache, never yours.
test: lint
	$(BIN)/python -m pytest -q

# The edit loop: the suite without lint and without the tests marked slow (training a model,
# the demo end to end, killing tuning workers), stopping at the first failure.
test-quick: install install-ros
	$(BIN)/python -m pytest -q -x -m "not slow"

demo: install
	$(BIN)/prune2drive demo

bench: install
	$(BIN)/prune2drive bench tfps --json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .test-cache
