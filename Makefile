# ska-tango-scheduler developer and CI targets.
#
#   make test              lint, then every test on the newest PyTango (.venv) and again on an
#                          old PyTango (.venv-old); creates both virtual environments as needed
#   make python-lint       ruff (lint and format check), mypy, import-linter
#   make chart-lint        yamllint of the Helm chart (charts/)
#   make docs              build the Sphinx documentation, warnings as errors
#   make package-test      build the sdist and wheel, install each in a fresh venv
#   make python-test       all tests on .venv             (PYTEST_ARGS="-k foo" to narrow)
#   make python-test-old   all tests on .venv-old
#   make demo              run the demo in .venv
#   make bench             benchmarks against plain PyTango -> docs/benchmarks.md (~7 min)
#   make bench-quick       benchmark smoke run (< 2 min) -> build/bench-quick/
#   make interop STB_GIT=DIR  tests/interop against the real ska-tango-base (not part of test)
#   make oci-build         build the OCI image, tagged as the Helm chart names it
#                          (BUILD_IMAGE=... BASE_IMAGE=... override SKA's base images)
#   make chart-test UTIL_GIT=DIR  helm lint + template with ska-tango-util from DIR (a git
#                          folder of ska-tango-charts), then run the rendered servers on
#                          127.0.0.1 from .venv and inside the image (not part of test)
#
# The virtual environments are (re)built when pyproject.toml changes or the PyTango pin
# changes. Only python3 and access to PyPI are needed.

SHELL := /bin/bash

PYTHON ?= python3
PYTANGO_NEW ?= 10.3.1
PYTANGO_OLD ?= 9.5.1
VENV ?= .venv
VENV_OLD ?= .venv-old
PYTEST_ARGS ?=
PIP_FLAGS ?= --quiet --disable-pip-version-check

VENV_STAMP := $(VENV)/.installed-pytango-$(PYTANGO_NEW)
VENV_OLD_STAMP := $(VENV_OLD)/.installed-pytango-$(PYTANGO_OLD)
SOURCES := src tests benchmarks tools
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.installed-bench

# make interop: the shared set-up script, a git clone of ska-tango-base (lmc-base-classes)
# holding tag $(STB_TAG), and where the environment goes.
SHARED ?= ../shared
STB_GIT ?=
STB_TAG ?= 1.3.2
INTEROP ?= build/interop

# make oci-build: SKA's build and runtime images are the Dockerfile's defaults; set both to
# build on other bases (any Debian-like image with python3 and its venv module).
BUILD_IMAGE ?=
BASE_IMAGE ?=
DOCKER ?= docker
OCI_BUILD_ARGS ?=
# make chart-test: a git folder of ska-telescope/ska-tango-charts (the tags Chart.yaml names),
# and the build folder (helm, the chart with its dependencies, dsconfig, logs).
UTIL_GIT ?=
CHART_TEST ?= build/chart-test
CHART_TEST_STAMP := $(CHART_TEST)/dsconfig/.installed-pytango-$(PYTANGO_NEW)

.PHONY: help test python-lint python-format python-test python-test-old demo venv venv-old \
	chart-lint docs package-test bench bench-quick interop oci-build chart-test \
	clean distclean

help:
	@sed -n '3,20p' Makefile | sed 's/^# \{0,1\}//'

# Create a virtual environment in $(1); fall back to virtualenv when this Python has no
# working venv module (e.g. Debian without python3-venv).
define make_venv
	@if [ ! -x "$(1)/bin/python" ]; then \
		echo "creating $(1)"; \
		$(PYTHON) -m venv "$(1)" 2>/dev/null || { \
			rm -rf "$(1)"; \
			$(PYTHON) -m pip install $(PIP_FLAGS) --user virtualenv && \
			$(PYTHON) -m virtualenv --quiet "$(1)"; \
		}; \
	fi
endef

$(VENV_STAMP): pyproject.toml
	$(call make_venv,$(VENV))
	@echo "installing ska-tango-scheduler with pytango==$(PYTANGO_NEW) into $(VENV)"
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -e ".[test,taranta,lint,docs,package]" "pytango==$(PYTANGO_NEW)"
	@rm -f $(VENV)/.installed-pytango-*
	@touch $@

$(VENV_OLD_STAMP): pyproject.toml
	$(call make_venv,$(VENV_OLD))
	@echo "installing ska-tango-scheduler with pytango==$(PYTANGO_OLD) into $(VENV_OLD)"
	$(VENV_OLD)/bin/python -m pip install $(PIP_FLAGS) -e ".[test,taranta]" "pytango==$(PYTANGO_OLD)"
	@rm -f $(VENV_OLD)/.installed-pytango-*
	@touch $@

venv: $(VENV_STAMP)

venv-old: $(VENV_OLD_STAMP)

# Runs every stage even when an earlier one fails, then fails if any did.
test: $(VENV_STAMP) $(VENV_OLD_STAMP)
	@failed=""; \
	$(MAKE) --no-print-directory python-lint || failed="$$failed python-lint"; \
	$(MAKE) --no-print-directory chart-lint || failed="$$failed chart-lint"; \
	$(MAKE) --no-print-directory docs || failed="$$failed docs"; \
	$(MAKE) --no-print-directory python-test || failed="$$failed python-test"; \
	$(MAKE) --no-print-directory python-test-old || failed="$$failed python-test-old"; \
	$(MAKE) --no-print-directory package-test || failed="$$failed package-test"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed"; exit 1; fi; \
	echo "make test: all stages passed"

python-lint: $(VENV_STAMP)
	@echo "== ruff check"
	$(VENV)/bin/ruff check $(SOURCES)
	@echo "== ruff format --check"
	$(VENV)/bin/ruff format --check $(SOURCES)
	@echo "== mypy"
	$(VENV)/bin/mypy
	@echo "== lint-imports"
	$(VENV)/bin/lint-imports

python-format: $(VENV_STAMP)
	$(VENV)/bin/ruff format $(SOURCES)
	$(VENV)/bin/ruff check --fix $(SOURCES)

python-test: $(VENV_STAMP)
	@echo "== pytest on pytango $(PYTANGO_NEW) ($(VENV))"
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# PyTango 9.5's own Database server does not work: the test database runs on .venv's Python.
python-test-old: $(VENV_STAMP) $(VENV_OLD_STAMP)
	@echo "== pytest on pytango $(PYTANGO_OLD) ($(VENV_OLD))"
	SKA_TANGO_SCHEDULER_DB_PYTHON="$(abspath $(VENV))/bin/python" \
		$(VENV_OLD)/bin/python -m pytest $(PYTEST_ARGS)

chart-lint: $(VENV_STAMP)
	@echo "== yamllint (Helm chart; its Go templates: tests/unit/test_chart.py, and make chart-test)"
	$(VENV)/bin/yamllint --strict .yamllint charts

# -W: warnings are errors. -E: read every source again, so that warnings of unchanged
# pages (and of docstrings) are reported on every run, not only on the first.
docs: $(VENV_STAMP)
	@echo "== sphinx-build (warnings are errors)"
	$(VENV)/bin/python -m sphinx -W --keep-going -E -q -b html docs docs/_build/html

package-test: $(VENV_STAMP)
	@echo "== build and install the sdist and the wheel in a fresh virtual environment"
	PYTHON="$(PYTHON)" PYTANGO="$(PYTANGO_NEW)" bash tools/package-test.sh "$(VENV)/bin/python"

demo: $(VENV_STAMP)
	$(VENV)/bin/python -m ska_tango_scheduler.demo

# The bench extra (matplotlib for the plots, py-spy for profiling) on top of .venv.
$(BENCH_STAMP): $(VENV_STAMP) pyproject.toml
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -e ".[test,lint,bench]" "pytango==$(PYTANGO_NEW)"
	@touch $@

bench: $(BENCH_STAMP)
	$(VENV)/bin/python -m benchmarks $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(VENV)/bin/python -m benchmarks --quick $(BENCH_ARGS)

# The environment holds the COMMITTED HEAD (setup.sh installs it with git archive): it is
# rebuilt whenever HEAD changes. Commit before running this.
interop:
	@if [ -z "$(STB_GIT)" ]; then \
		echo "make interop: set STB_GIT to a git clone of ska-tango-base" \
			"(ska-telescope/lmc-base-classes) that holds tag $(STB_TAG)," \
			"e.g. make interop STB_GIT=/path/to/lmc-base-classes" >&2; exit 2; fi
	@if [ ! -f "$(SHARED)/interop/setup.sh" ]; then \
		echo "make interop: $(SHARED)/interop/setup.sh not found; set SHARED" >&2; exit 2; fi
	@if [ -n "$$(git status --porcelain --untracked-files=no)" ]; then \
		echo "make interop: note: uncommitted changes are not in the environment (HEAD is)"; fi
	@head=$$(git rev-parse HEAD); \
	if [ ! -f "$(INTEROP)/.built-$$head-$(STB_TAG)" ]; then \
		STB_TAG="$(STB_TAG)" PYTANGO="$(PYTANGO_NEW)" INTEROP="$(abspath $(INTEROP))" \
			bash "$(SHARED)/interop/setup.sh" "$(STB_GIT)" . && \
		$(INTEROP)/venv/bin/python -m pip install $(PIP_FLAGS) pytest-timeout && \
		rm -f $(INTEROP)/.built-* && touch "$(INTEROP)/.built-$$head-$(STB_TAG)"; \
	fi
	$(INTEROP)/venv/bin/python -m pytest tests/interop -p no:cacheprovider $(PYTEST_ARGS)

# The image is tagged <image.registry>/<image.image>:<appVersion> read from the chart.
oci-build: $(VENV_STAMP)
	@image=$$($(VENV)/bin/python tools/chart_rehearsal.py image-name) || exit 1; \
	echo "== $(DOCKER) build -> $$image"; \
	$(DOCKER) build --network host -t "$$image" \
		--build-arg PYTANGO_VERSION=$(PYTANGO_NEW) \
		--build-arg VERSION=$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) \
		$(if $(BUILD_IMAGE),--build-arg BUILD_IMAGE=$(BUILD_IMAGE)) \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
		$(OCI_BUILD_ARGS) .

# dsconfig (json2tango, what the chart's configuration Job runs) in its own environment.
$(CHART_TEST_STAMP):
	$(call make_venv,$(CHART_TEST)/dsconfig)
	$(CHART_TEST)/dsconfig/bin/python -m pip install $(PIP_FLAGS) dsconfig "pytango==$(PYTANGO_NEW)"
	@rm -f $(CHART_TEST)/dsconfig/.installed-pytango-*
	@touch $@

# Skips (exit 0, a SKIPPED line) without UTIL_GIT; the image part skips without Docker.
chart-test: $(VENV_STAMP)
	@if [ -z "$(UTIL_GIT)" ]; then \
		$(VENV)/bin/python tools/chart_rehearsal.py run; exit 0; fi; \
	$(MAKE) --no-print-directory $(CHART_TEST_STAMP) && \
	$(VENV)/bin/python tools/chart_rehearsal.py run --util-git "$(UTIL_GIT)" \
		--work "$(CHART_TEST)" --json2tango-bin "$(CHART_TEST)/dsconfig/bin"

clean:
	rm -rf build dist docs/_build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache \
		.hypothesis .import_linter_cache
	find . -name __pycache__ -type d -not -path "./.venv*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(VENV_OLD)
