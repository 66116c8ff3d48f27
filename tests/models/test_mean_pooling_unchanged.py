"""Models whose histories are mean-pooled (no `sequence_encoders`, the default) are the
models of mtlrec before sequence encoders, bit for bit: the same weights from the same
seed and the same outputs, against `data/mean_pooling_models.npz` (written at the branch
point by `data/write_mean_pooling_fixture.py`; float32 on x86-64, TensorFlow 2.21)."""

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location("write_mean_pooling_fixture", DATA / "write_mean_pooling_fixture.py")
fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture)


@pytest.fixture(scope="module")
def recorded():
    with np.load(fixture.FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("case", sorted(fixture.CASES))
def test_default_mean_pooling_is_bit_identical_to_the_previous_models(case, recorded):
    keras.utils.set_random_seed(0)
    model = fixture.build(case)
    weights = sorted(k for k in recorded if k.startswith(f"{case}/weight_"))
    assert len(model.weights) == len(weights)
    for w, key in zip(model.weights, weights):
        np.testing.assert_array_equal(np.asarray(w), recorded[key], err_msg=f"{case}: {w.path}")
    outputs = model({k: keras.ops.convert_to_tensor(v) for k, v in fixture.INPUTS.items()})
    names = sorted(k[len(case) + 5:] for k in recorded if k.startswith(f"{case}/out_"))
    assert sorted(outputs) == names
    for name in names:
        np.testing.assert_array_equal(np.asarray(outputs[name]), recorded[f"{case}/out_{name}"], err_msg=f"{case}: {name}")
