"""A `.keras` file saved under one Keras backend loads under the others with the same predictions.

Keras picks its backend once per process, so each backend runs in a subprocess of
keras_files_across_backends.py; this test drives them from the default (TensorFlow) run. PyTorch
joins where it is installed (`pip install -e '.[torch]'`, `make test-torch`)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

WORKER = Path(__file__).with_name("keras_files_across_backends.py")
REPO = Path(__file__).resolve().parents[2]

# float32 through at most a few small matmuls, a softmax or an LSTM of 4 steps: the backends
# sum in different orders and use their own exp/tanh, a few units in the last place of values
# of order 1 (1e-7 each). 1e-5 leaves a hundred of them; a wrong weight or a lost mask moves
# the outputs by 1e-2 or more.
TOLERANCE = 1e-5

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="drives every backend in subprocesses from the default TensorFlow run",
)


def _worker():
    spec = importlib.util.spec_from_file_location("keras_files_across_backends", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(backend, *args):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    result = subprocess.run(
        [sys.executable, str(WORKER), *map(str, args)],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    return report["differences"]


def test_keras_files_load_across_tensorflow_jax_and_torch(tmp_path):
    pytest.importorskip("jax")
    worker = _worker()
    worker.save(tmp_path / "tensorflow")
    differences = _run("jax", "--load", tmp_path / "tensorflow", "--save", tmp_path / "jax")
    others = ["jax"]
    if importlib.util.find_spec("torch") is not None:
        differences.update(
            _run(
                "torch",
                "--load", tmp_path / "tensorflow",
                "--load", tmp_path / "jax",
                "--save", tmp_path / "torch",
            )
        )
        others.append("torch")
    for backend in others:
        differences.update(worker.load(tmp_path / backend))
    pairs = {key.split(":")[0] for key in differences}
    assert pairs == {"tensorflow -> jax", "jax -> tensorflow"} | (
        {"tensorflow -> torch", "jax -> torch", "torch -> tensorflow"} if "torch" in others else set()
    )
    assert len(differences) == len(worker.CASES) * (2 * len(others) + (len(others) == 2))
    worst = max(differences, key=differences.get)
    assert differences[worst] < TOLERANCE, (worst, differences[worst])
