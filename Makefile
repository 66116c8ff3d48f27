# Both targets build their own virtual environment, so a fresh clone needs only Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The suite runs in two processes (pytest-xdist): most tests are single-threaded
# Python and TensorFlow start-up, so two cores share it well (tests/models + tests/layers:
# 192 s in one process, 114 s in two; the whole suite 14:46 in one, 9:11 in two on a fresh clone).
# Budget: `make test` under 15 minutes on 2 cores. 2026-12-07, 2 cores at load 2.5: the suite
# 10:37 and the JAX layers 1:24 (16:00 and 2:08 before the parameter-server tests shared one
# cluster and each test's garbage collection stopped walking TensorFlow's objects: tests/conftest.py);
# the two tests that kill cluster tasks have a cluster of their own again since, about 20 s more.
TEST_WORKERS ?= 2
# The layers run on every Keras backend; Keras picks one per process, so each backend's layer
# suite is a pytest run of its own (tests/layers/conftest.py; the TensorFlow-only embedding
# tests are left out elsewhere). PyTorch from PyPI brings about 2.7 GB of CUDA wheels, so it has
# a target and an extra of its own (docs/guide/backends.md).
TORCH_STAMP := $(VENV)/.installed-torch

.PHONY: demo test test-jax test-torch bench clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mtlrec demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)
	$(MAKE) test-jax

test-jax: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -n $(TEST_WORKERS) tests/layers

$(TORCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,torch]'
	touch $(TORCH_STAMP)

# The layer suite on PyTorch, then the .keras files across all three backends
# (tests/layers/test_other_backends.py brings PyTorch in where it is installed).
test-torch: $(TORCH_STAMP)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -n $(TEST_WORKERS) tests/layers
	$(BIN)/python -m pytest tests/layers/test_other_backends.py

clean:
	rm -rf $(VENV) demo_runs .pytest_cache
