import inspect
import json

import keras
import numpy as np
import pytest

from mtlrec.layers import Expert

BASE_KEYS = set(keras.layers.Layer().get_config())


def constructor_args(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def kernels(expert):
    return [np.asarray(d.kernel) for d in expert.mlp.dense_layers]


def test_ones_kernel_by_hand():
    expert = Expert([2, 1], kernel_initializer="ones")
    x = np.array([[1.0, 2.0, 3.0], [-1.0, -1.0, -1.0]], "float32")
    # row 0: 6, 6 -> 12; row 1: relu(-3) = 0 -> 0 (activation on every layer)
    np.testing.assert_allclose(expert(x), [[12.0], [0.0]])


def test_two_unseeded_experts_start_different():
    a, b = Expert([8, 4]), Expert([8, 4])
    a.build((None, 6))
    b.build((None, 6))
    for ka, kb in zip(kernels(a), kernels(b)):
        assert not np.allclose(ka, kb)


def test_unseeded_experts_sharing_an_initializer_instance_still_differ():
    init = keras.initializers.GlorotUniform()
    a, b = Expert([4], kernel_initializer=init), Expert([4], kernel_initializer=init)
    a.build((None, 4))
    b.build((None, 4))
    assert not np.allclose(kernels(a)[0], kernels(b)[0])


def test_seeded_experts_are_reproducible_and_seed_dependent():
    a, b, c = Expert([8, 4], seed=3), Expert([8, 4], seed=3), Expert([8, 4], seed=4)
    for e in (a, b, c):
        e.build((None, 6))
    for ka, kb, kc in zip(kernels(a), kernels(b), kernels(c)):
        np.testing.assert_array_equal(ka, kb)
        assert not np.allclose(ka, kc)


def test_dropout_is_inactive_in_inference(rng):
    expert = Expert([32], dropout=0.5)
    x = rng.normal(size=(4, 3)).astype("float32")
    np.testing.assert_array_equal(expert(x), expert(x, training=False))
    assert np.sum(np.asarray(expert(x, training=True)) == 0) > np.sum(np.asarray(expert(x)) == 0)


def test_l2_penalty():
    expert = Expert([2], l2=0.5, kernel_initializer="ones")
    expert(np.ones((1, 3), "float32"))
    np.testing.assert_allclose(float(sum(expert.losses)), 0.5 * 6, rtol=1e-6)


def test_compute_output_shape():
    assert Expert([8, 5]).compute_output_shape((None, 3)) == (None, 5)


def test_config_round_trip():
    expert = Expert([8, 4], activation="elu", dropout=0.1, batch_norm=True, l2=1e-5, seed=11)
    config = expert.get_config()
    assert set(config) - BASE_KEYS == constructor_args(Expert)
    json.dumps(config)
    assert Expert.from_config(config).get_config() == config


def test_keras_save_load(keras_roundtrip, rng):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, Expert([6, 3], batch_norm=True)(inputs))
    x = rng.normal(size=(4, 5)).astype("float32")
    model(x, training=True)
    loaded = keras_roundtrip(model)
    assert isinstance(loaded.layers[1], Expert)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6)


def test_gradients_reach_every_weight(rng, gradients):
    expert = Expert([6, 3], activation="tanh", batch_norm=True)
    x = rng.normal(size=(8, 4)).astype("float32")
    target = keras.ops.convert_to_tensor(rng.normal(size=(8, 3)).astype("float32"))
    expert.build((None, 4))
    assert len(expert.trainable_weights) == 6  # (kernel, gamma, beta) x 2
    grads, _ = gradients(lambda: keras.ops.mean((expert(x, training=True) - target) ** 2), expert)
    for weight, grad in zip(expert.trainable_weights, grads):
        assert grad is not None, weight.path
        assert np.any(np.asarray(grad) != 0), weight.path


BAD_ARGUMENTS = [
    ({"units": [0]}, r"Received: units=\[0\]"),
    ({"units": 8}, r"one width per layer \(one layer of 8 units: \[8\]\)\. Received: units=8$"),
    ({"units": "wide"}, "Received: units='wide'"),
    ({"units": [4], "dropout": -0.2}, "Received: dropout=-0.2"),
    ({"units": [4], "activation": "nope"}, "Received: activation='nope'"),
    ({"units": [4], "l2": -1}, "Received: l2=-1"),
    ({"units": [4], "seed": 1.5}, "Received: seed=1.5"),
]


def test_bad_arguments():
    # one test item for all cases: each item costs a Keras session teardown
    for kwargs, match in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            Expert(**kwargs)
