# posterlens: `make demo` and `make test` on a fresh machine need only python3 (>=3.10) and PyPI.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(BIN)/pip install -q --disable-pip-version-check --progress-bar off
# The packages are installed by uv (parallel downloads: about 4x faster than pip here) when it can be installed
# into the environment, else by pip. uv sees pip's find-links (e.g. a local wheel folder) too. UV=0 uses pip only.
UV ?= 1
UV_PIP = { test -x $(BIN)/uv || $(PIP) uv; } && UV_FIND_LINKS="$${UV_FIND_LINKS:-$${PIP_FIND_LINKS:-}}" $(BIN)/uv pip install -q --python $(PY)
INSTALL = $(if $(filter 1,$(UV)),$(UV_PIP) $(1) || $(PIP) $(1),$(PIP) $(1))
VARIANT ?= default

# torch: on a Linux machine without an NVIDIA GPU, the CPU wheel (never a CUDA build, which is ten times larger):
# from the indexes pip is configured with (or a local wheel pip finds), else from PyTorch's CPU index. Elsewhere
# (a GPU box, macOS) PyPI's build. Override with e.g. `make install TORCH_SPEC='torch==2.13.0' TORCH_INDEX=`.
TORCH_VERSION ?= 2.13.0
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(shell uname -s)-$(HAS_GPU),Linux-)
TORCH_SPEC ?= torch==$(TORCH_VERSION)+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
else
TORCH_SPEC ?= torch==$(TORCH_VERSION)
TORCH_INDEX ?=
endif

# The install stamps are keyed by pyproject.toml's content, not its date (nbdev-export rewrites the file).
# Each command installs only what it needs: the demo and the reports the package alone, tests and nbdev the
# `dev` extra, the documentation site `docs`, Jupyter Lab `lab`.
DEPS := $(shell sha1sum pyproject.toml | cut -c1-12)
STAMP := $(VENV)/.installed-$(DEPS)
DEV_STAMP := $(VENV)/.dev-installed-$(DEPS)
DOCS_STAMP := $(VENV)/.docs-installed-$(DEPS)
# (a variable: a literal comma would split the arguments of $(call))
DOCS_EXTRAS := dev,docs,pixels
LAB_STAMP := $(VENV)/.lab-installed-$(DEPS)

.PHONY: install install-dev demo test nbtest pytest export clean check readme docs docs-serve bench bench-validity bench-demo lab report-all mutants

# torch goes in first, by uv when it finds the wheel, else by pip from its configured indexes or PyTorch's CPU index.
PIP_TORCH = $(PIP) "$(TORCH_SPEC)" 2>/dev/null || $(PIP) "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

$(STAMP):
	@test -x $(PY) || python3 -m venv $(VENV)
	$(if $(filter 1,$(UV)),$(UV_PIP) "$(TORCH_SPEC)" 2>/dev/null || { $(PIP_TORCH); },$(PIP_TORCH))
	$(call INSTALL,-e ".[pixels]")
	@rm -f $(VENV)/.installed-*; touch $@

$(DEV_STAMP): $(STAMP)
	$(call INSTALL,-e ".[dev]")
	@rm -f $(VENV)/.dev-installed-*; touch $@

install: $(STAMP)

install-dev: $(DEV_STAMP)

# Whole pipeline on the default variant (synthetic known-answer posters, offline describer, MiniLM),
# then the papermill HTML reports under reports/.
demo: install
	$(BIN)/posterlens run --variant $(VARIANT) --report

report-all: install
	$(BIN)/posterlens report --all

# nbdev-test runs every notebook top to bottom (fast `smoke` parameters), then pytest.
test: install-dev nbtest pytest

# nbdev-test runs the notebooks on one worker per core, each with one torch thread.
CORES ?= $(shell nproc 2>/dev/null || echo 2)
nbtest: install-dev
	OMP_NUM_THREADS=$(if $(filter 1,$(CORES)),$${OMP_NUM_THREADS:-},1) $(BIN)/nbdev-test --n-workers $(CORES) --timing

# pytest runs the test files on one worker per core plus one (pytest-xdist): several end-to-end tests spend much of
# their time waiting on a local server's rate limit, and the extra worker uses those cores meanwhile. Each test is
# sent to a free worker, except the modules marked `xdist_group` (their expensive fixtures are built once, on one
# worker); torch uses one thread per worker.
TEST_WORKERS ?= $(shell echo $$(( $(CORES) + 1 )))

pytest: install-dev
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# Mutation checks of the claims: each named bug of tests/mutations.toml is planted in a scratch copy and must make
# its named tests fail; prints the table (mutation, test that killed it) and the kill rate, fails unless all are
# killed. A mutation whose code moved is STALE (a failure): update its strings. MUTANTS_ARGS=--fast: the CI subset.
mutants: install-dev
	$(PY) tests/mutants.py $(MUTANTS_ARGS)

export: install-dev
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

# The exported library and the cleaned notebooks must match what is committed.
check: export
	@git diff --exit-code -- posterlens nbs || (echo "nbdev-export/nbdev-clean changed files: commit them" && exit 1)
	$(PY) bench/_readme_tables.py --check
	$(PY) docs/readme_tables.py --check

# The README's stage and captioner tables, from the declarations in nbs/04b_pipeline.ipynb.
readme: install-dev
	$(PY) docs/readme_tables.py

# Documentation site from the notebooks -> _docs/. The `## Analysis` sections run the `default` variant (its
# artifacts in runs/default/ and the executed notebooks in _proc/ are reused while their inputs are unchanged);
# DOCS_ARGS passes options to docs/build.py, e.g. DOCS_ARGS='--set epochs=1' (see docs/build.py --help).
$(DOCS_STAMP): $(DEV_STAMP)
	$(call INSTALL,-e ".[$(DOCS_EXTRAS)]")
	@rm -f $(VENV)/.docs-installed-*; touch $@

docs: $(DOCS_STAMP)
	$(PY) docs/build.py $(DOCS_ARGS)

# The built site over HTTP (search shows its excerpts only when served, not from files): http://localhost:8000
DOCS_PORT ?= 8000
docs-serve:
	@test -f _docs/index.html || $(MAKE) docs
	$(PY) -m http.server $(DOCS_PORT) --bind 127.0.0.1 --directory _docs

$(LAB_STAMP): $(STAMP)
	$(call INSTALL,-e ".[lab]")
	@rm -f $(VENV)/.lab-installed-*; touch $@

lab: $(LAB_STAMP)
	$(BIN)/jupyter lab nbs

# Every benchmark of bench/ (any bench/*.py not starting with _), one after the other: each writes its result to
# bench/results/NAME.json (a benchmark that needs a GPU or the network it lacks says why in its result); then the
# README's tables are generated from the results. BENCH_ARGS_<name> passes options to one of them; the defaults keep
# the slowest ones small: the demo and the report cells on the `smoke` variant, scale at 100 and 200 posters without
# reports, validity's fast
# stand-in (keeping the real model's last figures). The full-size runs: `make bench-demo` (`make demo` of the default
# variant on a fresh clone) and `make bench-validity` (the default variant's own procedure on 5 seeds, real and
# shuffled targets, each a full run: hours on 2 shared cores; finished stages are kept, so a rerun resumes).
BENCH_SCRIPTS := $(sort $(filter-out bench/_%,$(wildcard bench/*.py)))
BENCH_ARGS_validity ?= --model ridge
BENCH_ARGS_report_cells ?= --variant smoke
BENCH_ARGS_demo ?= --variant smoke --pip-cache
BENCH_ARGS_scale ?= --sizes 100,200 --no-reports
bench_args = $(BENCH_ARGS_$(basename $(notdir $(1))))
bench: install-dev
	@rc=0; $(foreach f,$(BENCH_SCRIPTS),echo "== $(f) $(call bench_args,$(f))"; $(PY) $(f) $(call bench_args,$(f)) || { echo "!! $(f) failed"; rc=1; };) \
	$(PY) bench/_readme_tables.py; exit $$rc

bench-validity: install-dev
	nice -n 5 $(PY) bench/validity.py --model default --seeds 5
	$(PY) bench/_readme_tables.py

# Everything a run or a build leaves behind (not the caption cache .cache/, which holds answers already paid for).
clean:
	rm -rf runs reports/*/ reports/index.html _proc _docs docs/_build jupyter_execute

# `make demo` on a fresh clone of this checkout in a temporary folder, timed stage by stage (install included).
bench-demo:
	python3 bench/demo.py $(BENCH_ARGS)
