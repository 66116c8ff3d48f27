import inspect
import json

import keras
import numpy as np
import pytest

from mtlrec.layers import Gate

BASE_KEYS = set(keras.layers.Layer().get_config())


def constructor_args(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def test_zero_kernel_gives_uniform_weights_and_expert_mean(rng):
    gate = Gate(3, return_weights=True, kernel_initializer="zeros")
    x = rng.normal(size=(4, 5)).astype("float32")
    experts = rng.normal(size=(4, 3, 2)).astype("float32")
    mixed, weights = gate([x, experts])
    np.testing.assert_allclose(weights, np.full((4, 3), 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(mixed, experts.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_weights_by_hand():
    gate = Gate(2, return_weights=True)
    gate.build([(None, 2), (None, 2, 3)])
    gate.kernel.assign([[1.0, 0.0], [0.0, 0.0]])
    gate.bias.assign([0.0, np.log(2.0)])
    x = np.array([[np.log(6.0), 7.0]], "float32")
    experts = np.array([[[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]]], "float32")
    # logits [ln 6, ln 2] -> weights [0.75, 0.25]
    mixed, weights = gate([x, experts])
    np.testing.assert_allclose(weights, [[0.75, 0.25]], rtol=1e-6)
    np.testing.assert_allclose(mixed, [[2.0, 3.0, 4.0]], rtol=1e-6)


def test_weights_are_a_distribution(rng):
    gate = Gate(4, return_weights=True)
    x = (3 * rng.normal(size=(16, 6))).astype("float32")
    _, weights = gate([x, rng.normal(size=(16, 4, 3)).astype("float32")])
    weights = np.asarray(weights)
    assert np.all(weights > 0)
    np.testing.assert_allclose(weights.sum(axis=1), np.ones(16), rtol=1e-6)


def test_without_return_weights_only_the_mixture(rng):
    gate = Gate(2)
    out = gate([rng.normal(size=(3, 4)).astype("float32"), np.ones((3, 2, 5), "float32")])
    np.testing.assert_allclose(out, np.ones((3, 5)), rtol=1e-6)  # weights sum to 1


def test_use_bias_false_has_only_a_kernel():
    gate = Gate(3, use_bias=False)
    gate.build([(None, 4), (None, 3, 2)])
    assert [w.name for w in gate.weights] == ["kernel"]


def test_seeds():
    a, b, c = Gate(3, seed=1), Gate(3, seed=1), Gate(3)
    d = Gate(3)
    for g in (a, b, c, d):
        g.build([(None, 4), (None, 3, 2)])
    np.testing.assert_array_equal(a.kernel, b.kernel)
    assert not np.allclose(c.kernel, d.kernel)


def test_default_kernel_is_fan_in_scaled_and_small():
    """Var(W) = 0.01 / fan_in: logits W x of std 0.1 for unit-variance inputs of any width."""
    gate = Gate(64, seed=2)
    gate.build([(None, 1000), (None, 64, 3)])
    assert np.asarray(gate.kernel).std() == pytest.approx(np.sqrt(0.01 / 1000), rel=0.03)
    assert gate.get_config()["kernel_initializer"]["class_name"] == "VarianceScaling"


def test_compute_output_shape():
    shapes = [(None, 4), (None, 3, 7)]
    assert Gate(3).compute_output_shape(shapes) == (None, 7)
    assert Gate(3, return_weights=True).compute_output_shape(shapes) == ((None, 7), (None, 3))


def test_wrong_number_of_experts():
    with pytest.raises(ValueError, match=r"num_experts=3.*experts shape=\(None, 4, 2\)"):
        Gate(3).build([(None, 4), (None, 4, 2)])


def test_input_must_be_a_pair():
    with pytest.raises(ValueError, match="gate_input"):
        Gate(3)(np.ones((2, 4), "float32"))


def test_config_round_trip():
    gate = Gate(4, return_weights=True, use_bias=False, kernel_initializer="he_normal", seed=9)
    config = gate.get_config()
    assert set(config) - BASE_KEYS == constructor_args(Gate)
    json.dumps(config)
    assert Gate.from_config(config).get_config() == config


def test_keras_save_load(keras_roundtrip, rng):
    x_in, e_in = keras.Input((4,)), keras.Input((3, 2))
    mixed, weights = Gate(3, return_weights=True)([x_in, e_in])
    model = keras.Model([x_in, e_in], [mixed, weights])
    x = rng.normal(size=(5, 4)).astype("float32")
    e = rng.normal(size=(5, 3, 2)).astype("float32")
    loaded = keras_roundtrip(model)
    assert isinstance(loaded.layers[2], Gate)
    for before, after in zip(model.predict([x, e], verbose=0), loaded.predict([x, e], verbose=0)):
        np.testing.assert_allclose(after, before, rtol=1e-6)


def test_gradients_reach_weights_and_experts(rng, gradients):
    gate = Gate(3)
    x = rng.normal(size=(8, 4)).astype("float32")
    experts = rng.normal(size=(8, 3, 2)).astype("float32")
    coef = keras.ops.convert_to_tensor(rng.normal(size=(8, 2)).astype("float32"))
    gate.build([x.shape, experts.shape])
    grads, _ = gradients(lambda experts: keras.ops.sum(gate([x, experts]) * coef), gate, [experts])
    assert len(grads) == 3
    for grad in grads:
        assert grad is not None
        assert np.any(np.asarray(grad) != 0)


BAD_ARGUMENTS = [
    ({"num_experts": 0}, "Received: num_experts=0"),
    ({"num_experts": 2.0}, "Received: num_experts=2.0"),
    ({"num_experts": [2]}, r"Received: num_experts=\[2\]"),  # a count: an int, never a list
    ({"num_experts": 2, "return_weights": "yes"}, "Received: return_weights='yes'"),
    ({"num_experts": 2, "use_bias": None}, "Received: use_bias=None"),
    ({"num_experts": 2, "kernel_initializer": "nope"}, "Received: kernel_initializer='nope'"),
    ({"num_experts": 2, "seed": "s"}, "Received: seed='s'"),
]


def test_bad_arguments():
    # one test item for all cases: each item costs a Keras session teardown
    for kwargs, match in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            Gate(**kwargs)
