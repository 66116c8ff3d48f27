import inspect
import json

import keras
import numpy as np
import pytest

from mtlrec.layers import InformationTransfer

BASE_KEYS = set(keras.layers.Layer().get_config())


def _identity_layer(d=2):
    layer = InformationTransfer(return_weights=True)
    layer.build([(None, d), (None, d)])
    for name in ("transfer", "query", "key", "value"):
        kernel, bias = getattr(layer, name)
        kernel.assign(np.eye(d, dtype="float32"))
        bias.assign(np.zeros(d, "float32"))
    return layer


def test_attention_by_hand():
    # W_g = h_1 = h_2 = h_3 = I: p = relu([1, -1]) = [1, 0], q = [1, 1];
    # scores |p|^2 / sqrt 2 = 1/sqrt 2 and |q|^2 / sqrt 2 = 2/sqrt 2;
    # w_q = sigmoid(1/sqrt 2), z = w_p p + w_q q = [1, w_q].
    layer = _identity_layer()
    z, w = layer([np.array([[1.0, -1.0]], "float32"), np.array([[1.0, 1.0]], "float32")])
    w_q = 1 / (1 + np.exp(-1 / np.sqrt(2)))
    np.testing.assert_allclose(w, [[1 - w_q, w_q]], rtol=1e-6)
    np.testing.assert_allclose(z, [[1.0, w_q]], rtol=1e-6)


def test_transfer_and_value_maps_by_hand():
    # previous of width 3 mapped to d = 2; equal scores (zero query) -> weights 1/2 each.
    layer = InformationTransfer()
    layer.build([(None, 3), (None, 2)])
    layer.transfer[0].assign(np.array([[1, 0], [0, 1], [1, 1]], "float32"))
    layer.transfer[1].assign(np.array([0.0, -10.0], "float32"))
    layer.query[0].assign(np.zeros((2, 2), "float32"))
    layer.value[0].assign(np.array([[2, 0], [0, 3]], "float32"))
    layer.value[1].assign(np.array([1.0, 1.0], "float32"))
    z = layer([np.array([[1.0, 2.0, 3.0]], "float32"), np.array([[0.5, -1.0]], "float32")])
    # p = relu([1 + 3, 2 + 3 - 10]) = [4, 0]; h_3(p) = [9, 1], h_3(q) = [2, -2]
    np.testing.assert_allclose(z, [[5.5, -0.5]], rtol=1e-6)


def test_gradients_reach_every_weight_and_both_inputs(rng, gradients):
    layer = InformationTransfer(seed=0)
    prev = rng.normal(size=(6, 3)).astype("float32")
    own = rng.normal(size=(6, 4)).astype("float32")
    coef = keras.ops.convert_to_tensor(rng.normal(size=(6, 4)).astype("float32"))
    layer.build([prev.shape, own.shape])
    grads, _ = gradients(lambda p, o: keras.ops.sum(layer([p, o]) * coef), layer, [prev, own])
    assert len(grads) == len(layer.trainable_weights) + 2
    for grad in grads:
        assert np.any(np.asarray(grad) != 0)


def test_seeds_give_equal_and_distinct_kernels():
    a, b, c = InformationTransfer(seed=1), InformationTransfer(seed=1), InformationTransfer(seed=2)
    for layer in (a, b, c):
        layer.build([(None, 4), (None, 4)])
    for name in ("transfer", "query", "key", "value"):
        np.testing.assert_array_equal(getattr(a, name)[0], getattr(b, name)[0])
        assert not np.allclose(getattr(a, name)[0], getattr(c, name)[0])
    assert not np.allclose(a.query[0], a.key[0])  # each kernel its own initializer


def test_compute_output_shape():
    assert InformationTransfer().compute_output_shape([(None, 3), (None, 5)]) == (None, 5)
    assert InformationTransfer(return_weights=True).compute_output_shape([(None, 3), (None, 5)]) == (
        (None, 5),
        (None, 2),
    )


def test_input_must_be_a_pair():
    with pytest.raises(ValueError, match=r"\[previous \(B, d'\), own \(B, d\)\]"):
        InformationTransfer()(np.ones((2, 4), "float32"))


def test_config_round_trip():
    layer = InformationTransfer(return_weights=True, kernel_initializer="he_normal", seed=5)
    config = layer.get_config()
    assert set(config) - BASE_KEYS == set(inspect.signature(InformationTransfer.__init__).parameters) - {
        "self",
        "kwargs",
    }
    json.dumps(config)
    assert InformationTransfer.from_config(config).get_config() == config


def test_keras_save_load(keras_roundtrip, rng):
    prev_in, own_in = keras.Input((3,)), keras.Input((4,))
    z = InformationTransfer(seed=2)([prev_in, own_in])
    model = keras.Model([prev_in, own_in], z)
    prev = rng.normal(size=(5, 3)).astype("float32")
    own = rng.normal(size=(5, 4)).astype("float32")
    loaded = keras_roundtrip(model)
    assert isinstance(loaded.layers[2], InformationTransfer)
    np.testing.assert_allclose(
        loaded.predict([prev, own], verbose=0), model.predict([prev, own], verbose=0), rtol=1e-6
    )


def test_bad_arguments():
    for kwargs, match in [
        ({"return_weights": 1}, "Received: return_weights=1"),
        ({"kernel_initializer": "nope"}, "Received: kernel_initializer='nope'"),
        ({"seed": 1.5}, "Received: seed=1.5"),
    ]:
        with pytest.raises(ValueError, match=match):
            InformationTransfer(**kwargs)
