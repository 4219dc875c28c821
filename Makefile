# xsquare_logger developer targets. Everything runs from the project venv (.venv);
# ROS 2 comes from the PyPI "ros-*" wheels (see docs and shared ENVIRONMENT notes).
#
#   make setup   create/refresh .venv, build msg/, install the project (editable)
#   make test    run the test suite            make lint   ruff check + mypy
#   make demo    run `xsq demo`                make bench  run the benchmarks
#   make smoke   plain `pip install .` into a fresh venv, then xsq run/record/info from it
#   make clean   remove build artefacts        make distclean   also remove .venv

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# This machine's pip config lists local index folders that lack most projects; pip then
# prints one "Location ... is ignored" warning per package. Hide only those lines.
PIP_FILTER := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; \
	exit $${PIPESTATUS[0]}
STAMP := $(VENV)/.setup-stamp
# pip of a new venv is upgraded to this (the bundled 23.x is slow and noisy here).
PIP_VERSION ?= 26.3

# DDS hygiene for every ROS process started from here: stay on the loopback, and use
# a domain of our own (override: make test ROS_DOMAIN_ID=17).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
ROS_DOMAIN_ID ?= 42
export ROS_DOMAIN_ID

PYTEST_ARGS ?=
# Set to 1 to treat "no tests collected" (pytest exit code 5) as success (.ci/run does).
NO_TESTS_OK ?= 0

LINT_PATHS := xsquare_logger benchmarks test launch scripts setup.py
MSG_SRCS := $(shell find msg -type f -not -path 'msg/build/*' 2>/dev/null)
SETUP_DEPS := requirements.txt constraints.txt setup.py setup.cfg pyproject.toml package.xml \
	resource/xsquare_logger scripts/build_msgs.sh $(MSG_SRCS) test/js/package-lock.json

.PHONY: help setup test lint format demo bench constraints smoke clean distclean

help:
	@sed -n '1,9p' Makefile

setup: $(STAMP)

# The stamp lives in the venv: deleting .venv also forces a full setup.
$(STAMP): $(SETUP_DEPS)
	@if [ ! -x "$(PY)" ]; then \
		echo "setup: creating $(VENV) with $(PYTHON)"; \
		"$(PYTHON)" -m venv "$(VENV)"; \
	fi
	@$(PIP) install -q --progress-bar off "pip==$(PIP_VERSION)" $(PIP_FILTER)
	@echo "setup: installing xsquare_logger (editable) with its dependencies and the dev tools, pinned"
	@echo "$(PIP) install -q -c constraints.txt -r requirements.txt"
	@$(PIP) install -q --progress-bar off -c constraints.txt -r requirements.txt $(PIP_FILTER)
	@echo "setup: building the xsquare_logger_msgs interfaces"
	scripts/build_msgs.sh "$(VENV)"
	@# pip's editable install skips data_files: expose package.xml, launch/ and config/
	@# in the venv's ament index by symlinks, so get_package_share_directory works
	@# (with AMENT_PREFIX_PATH=$(VENV)) and edits need no reinstall.
	@mkdir -p "$(VENV)/share/xsquare_logger" "$(VENV)/share/ament_index/resource_index/packages"
	@touch "$(VENV)/share/ament_index/resource_index/packages/xsquare_logger"
	@for f in package.xml launch config; do \
		ln -sfn "$(CURDIR)/$$f" "$(VENV)/share/xsquare_logger/$$f"; \
	done
	@# MCAP readers we did not write, in TypeScript (the library Foxglove and Lichtblick use),
	@# for test/test_mcap_js_reader.py; without npm that test skips and says why.
	@if command -v npm >/dev/null 2>&1; then \
		echo "setup: npm ci --prefix test/js (@mcap/core reader for the tests)"; \
		npm ci --prefix test/js --silent --no-audit --no-fund \
			|| echo "setup: npm ci failed: test_mcap_js_reader skips"; \
	else echo "setup: no npm: test_mcap_js_reader skips"; fi
	@touch "$@"
	@echo "setup: done"

test: setup
	@rc=0; $(PY) -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ] && [ "$(NO_TESTS_OK)" = 1 ]; then \
		echo "test: pytest collected no tests (exit 5), accepted (NO_TESTS_OK=1)"; rc=0; \
	fi; \
	exit $$rc

lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	@# What mypy checks (xsquare_logger, benchmarks) and how strictly: [tool.mypy] in pyproject.toml.
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format $(LINT_PATHS)

demo: setup
	$(VENV)/bin/xsq demo

# Options for the benchmarks, e.g. make bench BENCH_ARGS="--skip-humanoid --floor-duration 20"
# (python -m benchmarks --help lists them; the floor phase: benchmarks/floor.py).
BENCH_ARGS ?=
bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)

# Re-pin after changing setup.py's dependencies or requirements.txt: installs what is new
# (existing pins kept; to upgrade one, delete its line from constraints.txt first), then
# writes every installed distribution's version. test/test_dependencies.py checks the result.
constraints:
	$(PIP) install -q --progress-bar off -c constraints.txt -r requirements.txt $(PIP_FILTER)
	$(PY) scripts/freeze_constraints.py constraints.txt

# Plain `pip install .` into a fresh venv beside the ROS wheels, then xsq run/record/info
# from it (what a user of the package gets; CI runs it too).
smoke: setup
	scripts/smoke_install.sh

clean:
	rm -rf build install log .pytest_cache .ruff_cache .mypy_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
