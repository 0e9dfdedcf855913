SHELL := /bin/bash
# Two commands do everything (see README): `make test` and `make book`.
# Each creates or reuses the virtual environment in $(VENV), installs the pinned
# dependencies (constraints.txt) and registers the Jupyter kernel before it runs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ufm-installed
PROFILE ?= ci
JOBS ?= 1
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: install test book benchmark clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt \
	    -e '.[data,notebooks,book,distributed,sweep,peers,test]' 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ufm-companion)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

book: $(STAMP)
	$(VENV)/bin/ufm regenerate --profile $(PROFILE) --jobs $(JOBS)

benchmark: $(STAMP)
	$(PY) benchmarks/spectra.py
	$(PY) benchmarks/peers.py

clean:
	rm -rf _build
