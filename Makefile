# posterlens: `make demo` and `make test` on a fresh machine need only python3 (>=3.10) and PyPI.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# The CPU wheel of torch (on these machines it lies on disk); on a GPU box: make TORCH_SPEC='torch' ...
TORCH_SPEC ?= torch==2.13.0
VARIANT ?= default

# The install stamps are keyed by pyproject.toml's content, not its date (nbdev-export rewrites the file).
DEPS := $(shell sha1sum pyproject.toml | cut -c1-12)
STAMP := $(VENV)/.installed-$(DEPS)
DOCS_STAMP := $(VENV)/.docs-installed-$(DEPS)

.PHONY: install demo test nbtest pytest export clean check docs bench lab report-all

$(STAMP):
	@test -x $(PY) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,pixels]"
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

# Whole pipeline on the default variant (synthetic known-answer posters, offline describer, MiniLM),
# then the papermill HTML reports under reports/.
demo: install
	$(BIN)/posterlens run --variant $(VARIANT) --report

report-all: install
	$(BIN)/posterlens report --all

# nbdev-test runs every notebook top to bottom (fast `smoke` parameters), then pytest.
test: install nbtest pytest

nbtest: install
	$(BIN)/nbdev-test --n-workers 1 --timing

pytest: install
	$(BIN)/pytest -q tests

export: install
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

# The exported library and the cleaned notebooks must match what is committed.
check: export
	@git diff --exit-code -- posterlens nbs || (echo "nbdev-export/nbdev-clean changed files: commit them" && exit 1)

# Documentation site from the notebooks -> _docs/. The `## Analysis` sections run the `default` variant (its
# artifacts in runs/default/ and the executed notebooks in _proc/ are reused while their inputs are unchanged);
# DOCS_ARGS passes options to docs/build.py, e.g. DOCS_ARGS='--set epochs=1' (see docs/build.py --help).
# pip -qq: errors only, no warnings about index locations or versions.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install -qq --disable-pip-version-check -e ".[dev,docs]"
	@rm -f $(VENV)/.docs-installed-*; touch $@

docs: $(DOCS_STAMP)
	$(PY) docs/build.py $(DOCS_ARGS)

lab: install
	$(BIN)/pip install -q -e ".[lab]" && $(BIN)/jupyter lab nbs
