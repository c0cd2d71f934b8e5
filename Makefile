# calcnode: `make run` starts the node, `make test` runs the whole suite.
# Both start from a fresh clone: they create .venv and install what is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install system-deps bench clean

# The venv is rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# DCMTK, dicom3tools and Orthanc: the real peers the tests talk to.
system-deps:
	@sh deploy/install-system-deps.sh

run: $(STAMP)
	$(BIN)/calcnode serve

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -ra

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
