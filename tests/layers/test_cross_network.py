import keras
import numpy as np
import pytest

from mtlrec.layers import CrossNetwork


def reference(x, layer):
    """Numpy DCN-v2 cross stack with the layer's own weights."""
    x0 = x.astype("float64")
    xl = x0
    for l in range(layer.num_layers):
        bias = np.asarray(layer.biases[l])
        if layer.low_rank is None:
            wx = xl @ np.asarray(layer.kernels[l])
        else:
            u, v = np.asarray(layer.u_kernels[l]), np.asarray(layer.v_kernels[l])
            wx = (u @ (v.T @ xl.T)).T  # U_l (V_l^T x_l)
        xl = x0 * (wx + bias) + xl
    return xl


def test_ones_kernel_by_hand():
    # x0 = [1, 2], W = ones, b = 0: W x0 = [3, 3], x1 = x0 * [3, 3] + x0 = [4, 8];
    # W x1 = [12, 12], x2 = x0 * [12, 12] + x1 = [16, 32].
    x = np.array([[1.0, 2.0]], "float32")
    one = CrossNetwork(num_layers=1, kernel_initializer="ones")
    two = CrossNetwork(num_layers=2, kernel_initializer="ones")
    np.testing.assert_allclose(np.asarray(one(x)), [[4.0, 8.0]])
    np.testing.assert_allclose(np.asarray(two(x)), [[16.0, 32.0]])
    # rank 1 with U = V = ones gives U V^T = ones: the same numbers
    low = CrossNetwork(num_layers=2, low_rank=1, kernel_initializer="ones")
    np.testing.assert_allclose(np.asarray(low(x)), [[16.0, 32.0]])


def test_bias_by_hand():
    # W = 0, b = [1, -1]: x1 = x0 * b + x0 = [2, 0] for x0 = [1, 2]
    layer = CrossNetwork(num_layers=1, kernel_initializer="zeros")
    layer.build((None, 2))
    layer.biases[0].assign([1.0, -1.0])
    np.testing.assert_allclose(np.asarray(layer(np.array([[1.0, 2.0]], "float32"))), [[2.0, 0.0]])


@pytest.mark.parametrize("low_rank", [None, 2])
def test_matches_numpy_reference(rng, low_rank):
    x = rng.normal(size=(5, 6)).astype("float32")
    layer = CrossNetwork(num_layers=3, low_rank=low_rank, seed=1)
    layer.build((None, 6))
    for bias in layer.biases:  # non-zero biases so they are checked too
        bias.assign(rng.normal(size=6).astype("float32"))
    np.testing.assert_allclose(np.asarray(layer(x)), reference(x, layer), atol=1e-4)


def test_ones_kernel_matches_numpy(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    layer = CrossNetwork(num_layers=2, kernel_initializer="ones")
    x0 = x.astype("float64")
    x1 = x0 * (x0 @ np.ones((4, 4))) + x0
    x2 = x0 * (x1 @ np.ones((4, 4))) + x1
    np.testing.assert_allclose(np.asarray(layer(x)), x2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("low_rank, count", [(None, 4), (2, 6)])
def test_weights_and_gradients(rng, low_rank, count, gradients):
    x = rng.normal(size=(4, 5)).astype("float32")
    layer = CrossNetwork(num_layers=2, low_rank=low_rank, seed=2)
    grads, _ = gradients(lambda: keras.ops.sum(keras.ops.square(layer(x))), layer)
    assert len(layer.trainable_weights) == count
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None, weight.path
        assert np.abs(np.asarray(grad)).max() > 0, weight.path
    if low_rank is not None:
        assert tuple(layer.u_kernels[0].shape) == (5, 2)
        assert tuple(layer.v_kernels[0].shape) == (5, 2)


def test_layers_start_different():
    layer = CrossNetwork(num_layers=2, seed=0)
    layer.build((None, 4))
    assert not np.allclose(np.asarray(layer.kernels[0]), np.asarray(layer.kernels[1]))


@pytest.mark.parametrize("low_rank", [None, 3])
def test_save_load_in_functional_model(rng, keras_roundtrip, low_rank):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, CrossNetwork(num_layers=2, low_rank=low_rank, seed=3)(inputs))
    data = rng.normal(size=(4, 6)).astype("float32")
    before = np.asarray(model(data))
    after = np.asarray(keras_roundtrip(model)(data))
    np.testing.assert_array_equal(before, after)
    assert after.shape == (4, 6)


def test_config_round_trip():
    layer = CrossNetwork(num_layers=3, low_rank=4, kernel_initializer="he_normal", seed=5)
    config = layer.get_config()
    for key, value in {
        "num_layers": 3,
        "low_rank": 4,
        "kernel_initializer": "he_normal",
        "seed": 5,
    }.items():
        assert config[key] == value
    assert CrossNetwork.from_config(config).get_config() == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_layers": 0}, "Received: num_layers=0"),
        ({"num_layers": -3}, "Received: num_layers=-3"),
        ({"num_layers": [2]}, r"Received: num_layers=\[2\]"),  # a count: an int, never a list
        ({"low_rank": 0}, "Received: low_rank=0"),
        ({"low_rank": True}, "Received: low_rank=True"),
        ({"seed": -1}, "Received: seed=-1"),
        ({"kernel_initializer": "nope"}, "Received: kernel_initializer='nope'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CrossNetwork(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"rank-2 input \(B, D\)"):
        CrossNetwork()(np.zeros((2, 3, 4), "float32"))
