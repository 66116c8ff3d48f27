# Both targets build their own virtual environment, so a fresh clone needs only Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The suite runs in two processes (pytest-xdist): most tests are single-threaded
# Python and TensorFlow start-up, so two cores share it well (tests/models + tests/layers:
# 192 s in one process, 114 s in two; the whole suite 14:46 in one, 9:11 in two on a fresh clone).
TEST_WORKERS ?= 2

.PHONY: demo test bench clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mtlrec demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

clean:
	rm -rf $(VENV) demo_runs .pytest_cache
