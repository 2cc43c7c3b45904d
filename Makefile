# The README's two commands: `make demo` (main job on the embedded default) and `make test`.
# Both create the virtual environment on first use (pinned dependencies; torch 2.13.0 CPU wheel).
PYTHON ?= python3
VENV   ?= .venv
# this machine's CPUs: the demo's jobs, 1-thread trainings included, run side by side on them
CORES  ?= $(shell nproc 2>/dev/null || echo 8)
BIN    := $(VENV)/bin
# pytest-xdist workers of `make test`: one runs the ci preset and the tests that read it (tests/conftest.py), the
# others the rest
TEST_WORKERS ?= 2

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) all

test: $(VENV)/.installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist load

clean:
	rm -rf results data .snakemake
