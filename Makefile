# Two commands: `make demo` and `make test`. Each creates .venv when missing and installs
# ntkit with what it needs; torch is pinned here so pip takes the CPU wheel on this machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ntkit-installed
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test lint bench install clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH_PIN)"
	$(PY) -m pip install --quiet --no-deps "mup==1.0.0" "bmdal-reg==3.0.2"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ntkit demo

test: $(STAMP)
	$(PY) -m pytest

# The suite again on torch's non-vectorised CPU kernels and MKL's AVX2 code path, so that a
# test comparing two computations bit for bit, or a tolerance tighter than another
# instruction set's rounding, fails on our machine first. CI runs both (.ci/run). The docs
# build is left out here: it checks the site, not arithmetic, and `make test` ran it.
.PHONY: test-portable
test-portable: $(STAMP)
	ATEN_CPU_CAPABILITY=default MKL_CBWR=AVX2 $(PY) -m pytest -m "not docs"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

# The site (docs/, the API pages from the docstrings, examples/ run by the gallery) into site/;
# warnings are errors, so a broken reference or a failing example stops the build.
.PHONY: docs
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) bench/kernels_fc.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache site docs/generated
