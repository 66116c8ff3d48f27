import gc
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest


def pytest_configure(config):
    """TensorFlow starts here, with its default thread pools, so that no test's `Experiment`
    sets them for the tests after it (``training.intra_op_threads: auto`` applies only in a
    process where TensorFlow has not run yet; the command-line tests start such processes)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.constant(0)


def pytest_collection_finish(session):
    """Every test's ``clear_session`` below runs a full garbage collection, which walks every
    object Python tracks: TensorFlow's, Keras's and the test modules' (loaded by now, alive to
    the end) made it about 0.25 s a test, a quarter of the suite. Frozen, the collections walk
    only what the tests make."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _fixed_seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


@pytest.fixture
def keras_roundtrip(tmp_path):
    """Save a model as .keras and load it back with safe_mode=True."""

    def roundtrip(model, custom_objects=None):
        path = tmp_path / "model.keras"
        model.save(path)
        return keras.saving.load_model(path, safe_mode=True, custom_objects=custom_objects)

    return roundtrip


@pytest.fixture
def rng():
    return np.random.default_rng(0)
