import inspect
import json

import keras
import numpy as np
import pytest

from mtlrec.conventions.seeding import derive_seed
from mtlrec.layers import MixtureOfExperts

BASE_KEYS = set(keras.layers.Layer().get_config())


def constructor_args(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def first_kernels(layer):
    return [np.asarray(e.mlp.dense_layers[0].kernel) for e in layer.experts]


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_shapes_and_gate_weights(num_tasks, rng):
    layer = MixtureOfExperts(4, [8, 5], num_tasks, return_gate_weights=True)
    outputs, weights = layer(rng.normal(size=(6, 7)).astype("float32"))
    assert [tuple(o.shape) for o in outputs] == [(6, 5)] * num_tasks
    assert [tuple(w.shape) for w in weights] == [(6, 4)] * num_tasks
    for w in weights:
        np.testing.assert_allclose(np.asarray(w).sum(axis=1), np.ones(6), rtol=1e-6)
    assert layer.compute_output_shape((None, 7)) == (
        [(None, 5)] * num_tasks,
        [(None, 4)] * num_tasks,
    )


def test_without_gate_weights_returns_only_outputs(rng):
    outputs = MixtureOfExperts(2, [3], 2)(rng.normal(size=(4, 5)).astype("float32"))
    assert isinstance(outputs, list) and len(outputs) == 2


def build_by_hand():
    """3 linear experts with kernels 1, 2, 3 on x = ones(1, 2): outputs 2, 4, 6."""
    layer = MixtureOfExperts(3, [1], 2, expert_activation="linear", return_gate_weights=True,
                             batch_norm=False)
    layer.build((None, 2))
    for i, expert in enumerate(layer.experts):
        expert.mlp.dense_layers[0].kernel.assign(np.full((2, 1), i + 1.0))
    return layer


def test_zero_gates_average_the_experts_by_hand():
    layer = build_by_hand()
    for gate in layer.gates:
        gate.kernel.assign(np.zeros((2, 3)))
    outputs, weights = layer(np.ones((1, 2), "float32"))
    for out, w in zip(outputs, weights):
        np.testing.assert_allclose(out, [[4.0]], rtol=1e-6)  # (2 + 4 + 6) / 3
        np.testing.assert_allclose(w, [[1 / 3] * 3], rtol=1e-6)


def test_experts_normalise_their_pre_activations_by_default(rng):
    layer = MixtureOfExperts(3, [4], 2, expert_activation="linear", seed=1)
    x = (5.0 + 20.0 * rng.normal(size=(64, 6))).astype("float32")  # far from unit scale
    layer(x)
    for expert in layer.experts:
        out = np.asarray(expert(x, training=True))  # linear: the batch-normalised values
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(out.std(axis=0), 1.0, rtol=1e-2)
    assert not MixtureOfExperts(3, [4], 2, batch_norm=False).get_config()["batch_norm"]


def test_gates_start_close_to_uniform(rng):
    """Near-uniform initial gates: every expert gets about 1/n of every example."""
    layer = MixtureOfExperts(8, [4], 2, return_gate_weights=True, seed=3)
    _, weights = layer(rng.normal(size=(256, 100)).astype("float32"))
    for w in weights:  # logits of std ~0.1: every weight within half of 1/8 of it
        assert np.abs(np.asarray(w) - 1 / 8).max() < 1 / 16
    kernels = [np.asarray(g.kernel) for g in layer.gates]
    assert not np.array_equal(kernels[0], kernels[1])  # still drawn per gate


def test_each_task_has_its_own_gate_and_weights_show_utilization():
    layer = build_by_hand()
    for gate in layer.gates:
        gate.kernel.assign(np.zeros((2, 3)))
    layer.gates[0].bias.assign([0.0, 0.0, 20.0])  # task 0 uses expert 2
    layer.gates[1].bias.assign([20.0, 0.0, 0.0])  # task 1 uses expert 0
    outputs, weights = layer(np.ones((1, 2), "float32"))
    assert np.argmax(weights[0]) == 2 and np.argmax(weights[1]) == 0
    np.testing.assert_allclose(outputs[0], [[6.0]], rtol=1e-5)
    np.testing.assert_allclose(outputs[1], [[2.0]], rtol=1e-5)


def test_experts_and_gates_start_different():
    for seed in (None, 5):
        layer = MixtureOfExperts(3, [4], 2, seed=seed)
        layer.build((None, 4))
        kernels = first_kernels(layer)
        for i in range(3):
            for j in range(i + 1, 3):
                assert not np.allclose(kernels[i], kernels[j]), (seed, i, j)
        assert not np.allclose(layer.gates[0].kernel, layer.gates[1].kernel)


def test_seed_makes_the_layer_reproducible():
    a, b = MixtureOfExperts(3, [4], 2, seed=5), MixtureOfExperts(3, [4], 2, seed=5)
    a.build((None, 4))
    b.build((None, 4))
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)


def test_config_round_trip():
    layer = MixtureOfExperts(
        4, [16, 8], 3, expert_activation="tanh", dropout=0.1, return_gate_weights=True, seed=2
    )
    config = layer.get_config()
    assert set(config) - BASE_KEYS == constructor_args(MixtureOfExperts)
    json.dumps(config)
    assert MixtureOfExperts.from_config(config).get_config() == config


def test_keras_save_load(keras_roundtrip, rng):
    inputs = keras.Input((5,))
    outputs, weights = MixtureOfExperts(3, [4], 2, dropout=0.2, return_gate_weights=True)(inputs)
    model = keras.Model(inputs, outputs + weights)
    x = rng.normal(size=(4, 5)).astype("float32")
    loaded = keras_roundtrip(model)
    before, after = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert len(after) == 4
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_gradients_reach_every_weight(rng, gradients):
    layer = MixtureOfExperts(3, [6], 2, expert_activation="tanh")
    x = rng.normal(size=(16, 4)).astype("float32")
    targets = [keras.ops.convert_to_tensor(rng.normal(size=(16, 6)).astype("float32")) for _ in range(2)]
    layer.build((None, 4))
    assert len(layer.trainable_weights) == 3 * 3 + 2 * 2  # experts: kernel, BN gamma, beta

    def forward():
        outputs = layer(x, training=True)
        return sum(keras.ops.mean((o - t) ** 2) for o, t in zip(outputs, targets))

    grads, _ = gradients(forward, layer)
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None, weight.path
        assert np.any(np.asarray(grad) != 0), weight.path


def test_input_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"Received: \(None, 3, 4\)"):
        MixtureOfExperts(2, [4], 2).build((None, 3, 4))


BAD_ARGUMENTS = [
    ({"num_experts": 0}, "Received: num_experts=0"),
    ({"expert_units": [-3]}, r"Received: expert_units=\[-3\]"),
    ({"expert_units": 8}, r"one width per layer \(one layer of 8 units: \[8\]\)\. Received: expert_units=8$"),
    ({"num_tasks": 0}, "Received: num_tasks=0"),
    ({"expert_activation": "nope"}, "Received: expert_activation='nope'"),
    ({"dropout": 1.0}, "Received: dropout=1.0"),
    ({"return_gate_weights": 1}, "Received: return_gate_weights=1"),
    ({"seed": -4}, "Received: seed=-4"),
]


def test_bad_arguments():
    # one test item for all cases: each item costs a Keras session teardown
    for kwargs, match in BAD_ARGUMENTS:
        args = {"num_experts": 2, "expert_units": [4], "num_tasks": 2, **kwargs}
        with pytest.raises(ValueError, match=match):
            MixtureOfExperts(**args)


def test_each_experts_kernel_is_drawn_from_its_own_seed_path():
    """Expert i's first kernel is glorot_uniform seeded by the path seed -> expert_i -> dense_0."""
    layer = MixtureOfExperts(3, [4], 1, seed=11, batch_norm=False)
    layer.build((None, 5))
    for i, expert in enumerate(layer.experts):
        seed = derive_seed(derive_seed(11, f"expert_{i}"), "dense_0")
        want = keras.ops.convert_to_numpy(keras.initializers.GlorotUniform(seed=seed)((5, 4)))
        np.testing.assert_array_equal(np.asarray(expert.mlp.dense_layers[0].kernel), want)
    kernels = [np.asarray(e.mlp.dense_layers[0].kernel) for e in layer.experts]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
