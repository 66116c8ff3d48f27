import inspect
import json

import keras
import numpy as np
import pytest

from mtlrec.layers import MLP

BASE_KEYS = set(keras.layers.Layer().get_config())


def constructor_args(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def assert_every_weight_gets_gradient(gradients, layer, forward):
    grads, _ = gradients(forward, layer)
    assert len(grads) == len(layer.trainable_weights) > 0
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None, weight.path
        assert np.any(np.asarray(grad) != 0), weight.path


def test_ones_kernel_zero_bias_by_hand():
    layer = MLP([3, 2], kernel_initializer="ones")
    x = np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, 0.5]], "float32")
    # row 0: 6 per unit -> 3 * 6 = 18; row 1: -2.5 -> relu 0 -> 0
    np.testing.assert_allclose(layer(x), [[18.0, 18.0], [0.0, 0.0]])


def test_output_activation_applies_to_last_layer_only():
    layer = MLP(
        [2, 1],
        activation="linear",
        output_activation="sigmoid",
        kernel_initializer=keras.initializers.Constant(0.5),
    )
    x = np.array([[1.0, -3.0], [2.0, 0.0]], "float32")
    # hidden: 0.5 * sum(x) per unit (linear, so negatives survive); out: sigmoid(0.5 * 2 * h)
    hidden = 0.5 * x.sum(axis=1)
    expected = 1.0 / (1.0 + np.exp(-hidden))
    np.testing.assert_allclose(np.asarray(layer(x))[:, 0], expected, rtol=1e-6)


def test_default_output_activation_is_activation():
    layer = MLP([2, 2], kernel_initializer="ones")
    out = layer(np.array([[-1.0, -1.0]], "float32"))
    np.testing.assert_array_equal(out, [[0.0, 0.0]])  # relu also on the last layer


def test_batch_norm_in_inference_uses_initial_moments():
    layer = MLP([2], activation="linear", batch_norm=True, kernel_initializer="ones")
    out = layer(np.array([[1.0, 2.0]], "float32"), training=False)
    # no Dense bias with batch norm; moving mean 0, variance 1, epsilon 1e-3
    np.testing.assert_allclose(out, [[3.0 / np.sqrt(1.001)] * 2], rtol=1e-6)
    assert not layer.dense_layers[0].use_bias


def test_output_layer_has_no_batch_norm_or_dropout():
    layer = MLP([4, 1], dropout=0.5, batch_norm=True, output_activation="linear")
    layer.build((None, 3))
    assert layer.norm_layers[0] is not None and layer.norm_layers[1] is None
    assert layer.dropout_layers[0] is not None and layer.dropout_layers[1] is None
    assert layer.dense_layers[1].use_bias


def test_dropout_only_in_training_and_on_every_representation_layer():
    layer = MLP([16], dropout=0.5, kernel_initializer="ones", activation="linear")
    x = np.ones((8, 2), "float32")
    np.testing.assert_array_equal(layer(x, training=False), np.full((8, 16), 2.0))
    dropped = np.asarray(layer(x, training=True))
    # inverted dropout: every value is 0 or 2 / (1 - 0.5)
    assert set(np.unique(dropped)) == {0.0, 4.0}


def test_l2_penalty_on_every_kernel():
    layer = MLP([2, 1], l2=0.01, kernel_initializer="ones")
    layer(np.ones((1, 3), "float32"))
    assert len(layer.losses) == 2
    np.testing.assert_allclose(float(sum(layer.losses)), 0.01 * (6 + 2), rtol=1e-6)


def test_no_penalty_when_l2_is_zero():
    layer = MLP([2])
    layer(np.ones((1, 3), "float32"))
    assert layer.losses == []


def test_seeded_layers_are_reproducible_and_distinct():
    a, b, c = MLP([4, 4], seed=7), MLP([4, 4], seed=7), MLP([4, 4], seed=8)
    for layer in (a, b, c):
        layer.build((None, 4))
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)
    assert not np.allclose(a.dense_layers[0].kernel, c.dense_layers[0].kernel)
    # two layers of the same shape inside one MLP never share an initial kernel
    assert not np.allclose(a.dense_layers[0].kernel, a.dense_layers[1].kernel)


def test_initializer_seed_is_used_when_seed_is_none():
    init = keras.initializers.GlorotUniform(seed=3)
    a, b = MLP([4, 4], kernel_initializer=init), MLP([4, 4], kernel_initializer=init)
    a.build((None, 4))
    b.build((None, 4))
    np.testing.assert_array_equal(a.dense_layers[1].kernel, b.dense_layers[1].kernel)
    assert not np.allclose(a.dense_layers[0].kernel, a.dense_layers[1].kernel)


def test_unseeded_layers_differ():
    layer = MLP([4, 4], kernel_initializer=keras.initializers.GlorotUniform())
    layer.build((None, 4))
    assert not np.allclose(layer.dense_layers[0].kernel, layer.dense_layers[1].kernel)


def test_compute_output_shape():
    assert MLP([5, 3]).compute_output_shape((None, 7)) == (None, 3)


def test_config_round_trip():
    layer = MLP(
        [8, 1],
        activation="tanh",
        dropout=0.2,
        batch_norm=True,
        l2=1e-4,
        output_activation="linear",
        kernel_initializer=keras.initializers.HeNormal(seed=3),
        seed=5,
    )
    config = layer.get_config()
    assert set(config) - BASE_KEYS == constructor_args(MLP)
    json.dumps(config)
    clone = MLP.from_config(config)
    assert clone.get_config() == config


def test_keras_save_load(keras_roundtrip, rng):
    inputs = keras.Input((5,))
    mlp = MLP([6, 3], dropout=0.3, batch_norm=True, l2=1e-3, output_activation="linear")
    outputs = mlp(inputs)
    model = keras.Model(inputs, outputs)
    x = rng.normal(size=(4, 5)).astype("float32")
    model(x, training=True)  # move the batch-norm statistics away from their initial values
    loaded = keras_roundtrip(model)
    assert isinstance(loaded.layers[1], MLP)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6)


def test_gradients_reach_every_weight(rng, gradients):
    layer = MLP([6, 3], batch_norm=True, activation="tanh", output_activation="linear")
    x = rng.normal(size=(8, 4)).astype("float32")
    target = keras.ops.convert_to_tensor(rng.normal(size=(8, 3)).astype("float32"))
    layer.build((None, 4))
    assert len(layer.trainable_weights) == 5  # kernel, gamma, beta, kernel, bias
    assert_every_weight_gets_gradient(
        gradients, layer, lambda: keras.ops.mean((layer(x, training=True) - target) ** 2)
    )


BAD_ARGUMENTS = [
    ({"units": [-3]}, r"Received: units=\[-3\]"),
    ({"units": 8}, r"one width per layer \(one layer of 8 units: \[8\]\)\. Received: units=8$"),
    ({"units": []}, r"Received: units=\[\]"),
    ({"units": [4, 2.5]}, r"Received: units=\[4, 2.5\]"),
    ({"units": [4], "dropout": 1.5}, "Received: dropout=1.5"),
    ({"units": [4], "l2": -0.1}, "Received: l2=-0.1"),
    ({"units": [4], "activation": "nope"}, "Received: activation='nope'"),
    ({"units": [4], "output_activation": "nope"}, "Received: output_activation='nope'"),
    ({"units": [4], "batch_norm": "yes"}, "Received: batch_norm='yes'"),
    ({"units": [4], "kernel_initializer": "nope"}, "Received: kernel_initializer='nope'"),
    ({"units": [4], "seed": -1}, "Received: seed=-1"),
]


def test_bad_arguments():
    # one test item for all cases: each item costs a Keras session teardown
    for kwargs, match in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            MLP(**kwargs)
