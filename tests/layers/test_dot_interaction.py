import itertools

import keras
import numpy as np
import pytest

from mtlrec.layers import DotInteraction


def test_by_hand():
    # v1 = [1, 2], v2 = [3, 4], v3 = [1, 1]: <v1,v2> = 11, <v1,v3> = 3, <v2,v3> = 7
    fields = np.array([[[1.0, 2.0], [3.0, 4.0], [1.0, 1.0]]], "float32")
    np.testing.assert_allclose(np.asarray(DotInteraction()(fields)), [[11.0, 3.0, 7.0]])


@pytest.mark.parametrize("num_fields", [2, 3, 7])
def test_matches_pairwise_loop(rng, num_fields):
    fields = rng.normal(size=(5, num_fields, 4)).astype("float32")
    expected = np.stack(
        [(fields[:, i] * fields[:, j]).sum(-1) for i, j in itertools.combinations(range(num_fields), 2)],
        axis=1,
    )
    out = np.asarray(DotInteraction()(fields))
    assert out.shape == (5, num_fields * (num_fields - 1) // 2)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_save_load_in_functional_model(rng, keras_roundtrip):
    inputs = keras.Input((3, 4))
    hidden = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, DotInteraction()(hidden))
    data = rng.normal(size=(6, 3, 4)).astype("float32")
    before = np.asarray(model(data))
    after = np.asarray(keras_roundtrip(model)(data))
    np.testing.assert_array_equal(before, after)
    assert after.shape == (6, 3)


def test_config_round_trip():
    config = DotInteraction(name="dot").get_config()
    assert DotInteraction.from_config(config).get_config() == config


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 4), r"rank 3 \(B, F, k\). Received input shape: \(2, 4\)"),
        ((2, 1, 4), r"F >= 2\). Received input shape: \(2, 1, 4\)"),
    ],
)
def test_bad_inputs(shape, message):
    with pytest.raises(ValueError, match=message):
        DotInteraction()(np.zeros(shape, "float32"))
