import inspect
import json

import keras
import numpy as np
import pytest

from mtlrec.layers import DSelectKGate

BASE_KEYS = set(keras.layers.Layer().get_config())


def _built(num_experts, k, d=2, h=3, **kwargs):
    gate = DSelectKGate(num_experts, k=k, return_weights=True, **kwargs)
    gate.build([(None, d), (None, num_experts, h)])
    gate.selector_kernel.assign(np.zeros(gate.selector_kernel.shape, "float32"))
    gate.mixture_kernel.assign(np.zeros(gate.mixture_kernel.shape, "float32"))
    return gate


def test_smooth_step_weights_by_hand():
    # E = 4 -> m = 2 bits; one selector with z = (0.25, -1), gamma = 1:
    # S(0.25) = -2 * 0.25^3 + 1.5 * 0.25 + 0.5 = 0.84375, S(-1) = 0.
    # r_l = prod_j S^b (1 - S)^(1 - b), b(l)_j = bit j of l:
    # l=0 (0,0): 0.15625; l=1 (1,0): 0.84375; l=2 (0,1): 0; l=3 (1,1): 0.
    gate = _built(4, k=1, entropy_reg=0.5)
    gate.selector_bias.assign([0.25, -1.0])
    experts = np.array([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [5.0, 5.0, 5.0]]], "float32")
    mixed, weights = gate([np.ones((1, 2), "float32"), experts])
    np.testing.assert_allclose(weights, [[0.15625, 0.84375, 0.0, 0.0]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mixed, [[0.15625, 0.84375, 0.0]], rtol=1e-6, atol=1e-7)
    p = np.array([0.15625, 0.84375, 0.0, 0.0])
    entropy = -np.sum(p * np.log(p + 1e-6))
    assert len(gate.losses) == 1  # E is a power of two: no unused codes
    np.testing.assert_allclose(gate.losses[0], 0.5 * entropy, rtol=1e-5)


def test_two_selectors_mix_exactly_two_experts():
    # E = 3 -> m = 2 bits (codes 0..3; code 3 names no expert). Selector 1: z = (-1, 1)
    # -> code 2; selector 2: z = (-1, -1) -> code 0; softmax([ln 3, 0]) = (0.75, 0.25).
    gate = _built(3, k=2)
    gate.selector_bias.assign([-1.0, 1.0, -1.0, -1.0])
    gate.mixture_bias.assign([np.log(3.0), 0.0])
    experts = np.array([[[1.0, 2.0, 3.0], [9.0, 9.0, 9.0], [5.0, 6.0, 7.0]]], "float32")
    mixed, weights = gate([np.ones((1, 2), "float32"), experts])
    np.testing.assert_allclose(weights, [[0.25, 0.0, 0.75]], rtol=1e-6)
    np.testing.assert_allclose(mixed, [[4.0, 5.0, 6.0]], rtol=1e-6)
    entropy, unused = gate.losses
    np.testing.assert_allclose(entropy, 0.0, atol=1e-6)  # one-hot selectors
    np.testing.assert_allclose(unused, 0.0, atol=1e-7)


def test_unused_code_is_penalised():
    gate = _built(3, k=1, entropy_reg=0.0)
    gate.selector_bias.assign([1.0, 1.0])  # code 3: no such expert
    _, weights = gate([np.ones((2, 2), "float32"), np.ones((2, 3, 3), "float32")])
    np.testing.assert_allclose(weights, np.zeros((2, 3)), atol=1e-7)
    assert len(gate.losses) == 1
    np.testing.assert_allclose(gate.losses[0], 1.0, rtol=1e-6)


def test_saturated_selectors_give_at_most_k_experts(rng):
    gate = DSelectKGate(8, k=2, return_weights=True, entropy_reg=0.0, seed=3)
    gate.build([(None, 5), (None, 8, 2)])
    # inputs and kernel entries +-1 and +-1e3 over d = 5 (odd): every |z_j| >= 1e3
    signs = rng.choice([-1.0, 1.0], size=gate.selector_kernel.shape)
    gate.selector_kernel.assign((1e3 * signs).astype("float32"))
    x = rng.choice([-1.0, 1.0], size=(64, 5)).astype("float32")
    _, weights = gate([x, rng.normal(size=(64, 8, 2)).astype("float32")])
    weights = np.asarray(weights)
    assert np.all((weights > 0).sum(axis=1) <= 2)
    np.testing.assert_allclose(weights.sum(axis=1), np.ones(64), rtol=1e-6)


def test_initial_weights_spread_over_all_experts(rng):
    gate = DSelectKGate(4, k=2, return_weights=True, seed=0)
    _, weights = gate([rng.normal(size=(16, 6)).astype("float32"), np.ones((16, 4, 2), "float32")])
    np.testing.assert_allclose(weights, np.full((16, 4), 0.25), atol=0.1)  # |z| < 0.1: S near 1/2


def test_gradients_reach_every_weight(rng, gradients):
    gate = DSelectKGate(4, k=2, seed=1)
    x = rng.normal(size=(8, 4)).astype("float32")
    experts = rng.normal(size=(8, 4, 2)).astype("float32")
    coef = keras.ops.convert_to_tensor(rng.normal(size=(8, 2)).astype("float32"))
    gate.build([x.shape, experts.shape])
    grads, _ = gradients(lambda: keras.ops.sum(gate([x, experts]) * coef), gate)
    assert len(grads) == len(gate.trainable_weights) > 0
    for grad in grads:
        assert np.any(np.asarray(grad) != 0)


def test_seeds():
    a, b, c = DSelectKGate(4, seed=1), DSelectKGate(4, seed=1), DSelectKGate(4, seed=2)
    for g in (a, b, c):
        g.build([(None, 4), (None, 4, 2)])
    np.testing.assert_array_equal(a.selector_kernel, b.selector_kernel)
    np.testing.assert_array_equal(a.mixture_kernel, b.mixture_kernel)
    assert not np.allclose(a.selector_kernel, c.selector_kernel)


def test_compute_output_shape():
    shapes = [(None, 4), (None, 3, 7)]
    assert DSelectKGate(3).compute_output_shape(shapes) == (None, 7)
    assert DSelectKGate(3, return_weights=True).compute_output_shape(shapes) == ((None, 7), (None, 3))


def test_wrong_number_of_experts():
    with pytest.raises(ValueError, match=r"num_experts=3.*experts shape=\(None, 4, 2\)"):
        DSelectKGate(3).build([(None, 4), (None, 4, 2)])


def test_config_round_trip():
    gate = DSelectKGate(5, k=3, gamma=0.5, entropy_reg=0.0, return_weights=True, seed=9)
    config = gate.get_config()
    assert set(config) - BASE_KEYS == set(inspect.signature(DSelectKGate.__init__).parameters) - {
        "self",
        "kwargs",
    }
    json.dumps(config)
    assert DSelectKGate.from_config(config).get_config() == config


def test_keras_save_load(keras_roundtrip, rng):
    x_in, e_in = keras.Input((4,)), keras.Input((3, 2))
    mixed, weights = DSelectKGate(3, return_weights=True, seed=4)([x_in, e_in])
    model = keras.Model([x_in, e_in], [mixed, weights])
    x = rng.normal(size=(5, 4)).astype("float32")
    e = rng.normal(size=(5, 3, 2)).astype("float32")
    loaded = keras_roundtrip(model)
    assert isinstance(loaded.layers[2], DSelectKGate)
    for before, after in zip(model.predict([x, e], verbose=0), loaded.predict([x, e], verbose=0)):
        np.testing.assert_allclose(after, before, rtol=1e-6)


BAD_ARGUMENTS = [
    ({"num_experts": 1}, "Received: num_experts=1"),
    ({"num_experts": 4, "k": 0}, "Received: k=0"),
    ({"num_experts": 4, "gamma": 0}, "Received: gamma=0"),
    ({"num_experts": 4, "entropy_reg": -1.0}, "Received: entropy_reg=-1.0"),
    ({"num_experts": 4, "return_weights": "yes"}, "Received: return_weights='yes'"),
    ({"num_experts": 4, "seed": -2}, "Received: seed=-2"),
]


def test_bad_arguments():
    for kwargs, match in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            DSelectKGate(**kwargs)
