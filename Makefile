# amlflow's single entry point. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help install demo test test-all lint format serve bench gen

help:            ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml constraints/ci.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints/ci.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed   ## create .venv and install amlflow with its test and lint tools

demo: install    ## run the MNIST pipeline on the embedded defaults (real digits, no network)
	$(PY) -m flows.mnist_pipeline

test: install    ## run the test suite CI runs: the default layers plus the slow ones that fit (marker ci)
	$(PY) -m pytest -m 'not slow or ci'

lint: install    ## ruff check, ruff format --check, mypy (strict on the engine); CI runs it before the tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install  ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test-all: install ## run every test layer, slow ones included
	$(PY) -m pytest -m ''

serve: install   ## start the AML-compatible endpoint on 127.0.0.1:8080
	$(VENV)/bin/amlflow serve --host 127.0.0.1 --port 8080

gen: install     ## regenerate docs/operations.md from botocore's service model
	$(PY) scripts/gen_operations.py
