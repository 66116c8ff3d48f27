import itertools

import keras
import numpy as np
import pytest

from mtlrec.layers import FMInteraction


def brute_force(fields):
    """sum_{i<j} v_i * v_j, element-wise, by looping over the pairs."""
    num_fields = fields.shape[1]
    out = np.zeros((fields.shape[0], fields.shape[2]))
    for i, j in itertools.combinations(range(num_fields), 2):
        out += fields[:, i] * fields[:, j]
    return out


def test_by_hand():
    # v1 = [1, 2], v2 = [3, 4], v3 = [1, 1]:
    # v1*v2 + v1*v3 + v2*v3 = [3, 8] + [1, 2] + [3, 4] = [7, 14]; summed: 21
    fields = np.array([[[1.0, 2.0], [3.0, 4.0], [1.0, 1.0]]], "float32")
    np.testing.assert_allclose(np.asarray(FMInteraction()(fields)), [[7.0, 14.0]])
    np.testing.assert_allclose(
        np.asarray(FMInteraction(reduce_sum=True)(fields)), [[21.0]]
    )


@pytest.mark.parametrize("num_fields", [2, 3, 7])
def test_matches_pairwise_sum(rng, num_fields):
    fields = rng.normal(size=(5, num_fields, 4)).astype("float32")
    expected = brute_force(fields.astype("float64"))
    out = np.asarray(FMInteraction()(fields))
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    summed = np.asarray(FMInteraction(reduce_sum=True)(fields))
    assert summed.shape == (5, 1)
    np.testing.assert_allclose(summed[:, 0], expected.sum(-1), atol=1e-4)


def test_gradient_is_sum_of_other_fields(rng, gradients):
    # d/dv_i sum_{a<b} <v_a, v_b> = sum_{j != i} v_j
    values = rng.normal(size=(2, 4, 3)).astype("float32")
    layer = FMInteraction(reduce_sum=True)
    (grad,), _ = gradients(lambda fields: keras.ops.sum(layer(fields)), layer, [values])
    expected = values.sum(axis=1, keepdims=True) - values
    np.testing.assert_allclose(grad, expected, atol=1e-5)


@pytest.mark.parametrize("reduce_sum", [False, True])
def test_save_load_in_functional_model(rng, keras_roundtrip, reduce_sum):
    inputs = keras.Input((3, 4))
    hidden = keras.layers.Dense(4)(inputs)
    model = keras.Model(inputs, FMInteraction(reduce_sum=reduce_sum)(hidden))
    data = rng.normal(size=(6, 3, 4)).astype("float32")
    before = np.asarray(model(data))
    after = np.asarray(keras_roundtrip(model)(data))
    np.testing.assert_array_equal(before, after)
    assert after.shape == ((6, 1) if reduce_sum else (6, 4))


def test_config_round_trip():
    config = FMInteraction(reduce_sum=True, name="fm").get_config()
    assert config["reduce_sum"] is True
    assert FMInteraction.from_config(config).get_config() == config


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: reduce_sum='yes'"):
        FMInteraction(reduce_sum="yes")


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 4), r"rank 3 \(B, F, k\). Received input shape: \(2, 4\)"),
        ((2, 1, 4), r"F >= 2\). Received input shape: \(2, 1, 4\)"),
        ((2, 2, 2, 4), r"rank 3"),
    ],
)
def test_bad_inputs(shape, message):
    with pytest.raises(ValueError, match=message):
        FMInteraction()(np.zeros(shape, "float32"))
