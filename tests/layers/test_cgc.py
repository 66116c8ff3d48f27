import inspect
import json

import keras
import numpy as np
import pytest

from mtlrec.layers import CGC

BASE_KEYS = set(keras.layers.Layer().get_config())


def constructor_args(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


@pytest.mark.parametrize("num_tasks", [2, 3])
@pytest.mark.parametrize("is_last", [False, True])
def test_shapes_and_gate_weights(num_tasks, is_last, rng):
    layer = CGC(num_tasks, 2, 3, [8, 5], is_last=is_last, return_gate_weights=True)
    outputs, weights = layer(rng.normal(size=(6, 7)).astype("float32"))
    n_out = num_tasks if is_last else num_tasks + 1
    assert [tuple(o.shape) for o in outputs] == [(6, 5)] * n_out
    assert [tuple(w.shape) for w in weights] == [(6, 2 + 3)] * num_tasks
    for w in weights:
        np.testing.assert_allclose(np.asarray(w).sum(axis=1), np.ones(6), rtol=1e-6)
    assert layer.compute_output_shape((None, 7)) == ([(None, 5)] * n_out, [(None, 5)] * num_tasks)


def linear_cgc(is_last=False, return_gate_weights=False):
    """2 tasks, 1 expert each, 1 shared; linear experts with ones kernels; zero gate kernels."""
    layer = CGC(2, 1, 1, [1], is_last=is_last, return_gate_weights=return_gate_weights,
                expert_activation="linear")
    layer.build([(None, 2), (None, 2), (None, 2)])
    for expert in layer.task_experts + layer.shared_experts:
        expert.mlp.dense_layers[0].kernel.assign(np.ones((2, 1)))
    for gate in layer.task_gates + ([layer.shared_gate] if layer.shared_gate else []):
        gate.kernel.assign(np.zeros(gate.kernel.shape))
    return layer


def test_routing_by_hand():
    layer = linear_cgc()
    x1 = np.array([[1.0, 1.0]], "float32")  # task 0 expert -> 2
    x2 = np.array([[2.0, 2.0]], "float32")  # task 1 expert -> 4
    xs = np.array([[3.0, 3.0]], "float32")  # shared expert -> 6
    out0, out1, shared = layer([x1, x2, xs])
    np.testing.assert_allclose(out0, [[(2 + 6) / 2]], rtol=1e-6)
    np.testing.assert_allclose(out1, [[(4 + 6) / 2]], rtol=1e-6)
    np.testing.assert_allclose(shared, [[(2 + 4 + 6) / 3]], rtol=1e-6)


def test_each_gate_reads_its_own_input_by_hand():
    layer = linear_cgc(return_gate_weights=True)
    layer.task_gates[0].kernel.assign([[1.0, 0.0], [0.0, 0.0]])
    layer.shared_gate.kernel.assign([[0.0, 0.0, 0.0], [np.log(2.0), 0.0, 0.0]])
    x1 = np.array([[np.log(3.0), 0.0]], "float32")  # task 0 expert -> ln 3
    x2 = np.array([[1.0, 1.0]], "float32")  # task 1 expert -> 2
    xs = np.array([[0.0, 4.0]], "float32")  # shared expert -> 4
    (out0, out1, shared), weights = layer([x1, x2, xs])
    # task 0 gate on x1: logits [ln 3, 0] -> [0.75, 0.25] over [own, shared]
    np.testing.assert_allclose(weights[0], [[0.75, 0.25]], rtol=1e-6)
    np.testing.assert_allclose(out0, [[0.75 * np.log(3.0) + 0.25 * 4]], rtol=1e-6)
    np.testing.assert_allclose(out1, [[(2 + 4) / 2]], rtol=1e-6)
    # shared gate on xs: logits [4 ln 2, 0, 0] -> [16, 1, 1] / 18 over all experts
    np.testing.assert_allclose(shared, [[(16 * np.log(3.0) + 2 + 4) / 18]], rtol=1e-6)


def test_single_tensor_feeds_every_task_and_the_shared_part():
    layer = linear_cgc(is_last=True)
    outputs = layer(np.array([[1.0, 2.0]], "float32"))
    assert len(outputs) == 2
    for out in outputs:
        np.testing.assert_allclose(out, [[3.0]], rtol=1e-6)


def test_task_output_depends_only_on_its_own_and_the_shared_input(rng):
    layer = CGC(2, 2, 1, [4])
    x1, x2, xs = (rng.normal(size=(3, 4)).astype("float32") for _ in range(3))
    before = layer([x1, x2, xs])
    after = layer([x1, x2 + 1.0, xs])  # only task 1's input changes
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.allclose(after[1], before[1])
    assert not np.allclose(after[2], before[2])  # shared gate mixes task 1's experts too


def test_gate_weights_show_which_experts_a_task_uses():
    layer = linear_cgc(return_gate_weights=True)
    layer.task_gates[0].bias.assign([20.0, 0.0])  # task 0: its own expert
    layer.task_gates[1].bias.assign([0.0, 20.0])  # task 1: the shared expert
    x1, x2, xs = (np.full((1, 2), v, "float32") for v in (1.0, 2.0, 3.0))
    outputs, weights = layer([x1, x2, xs])
    assert np.argmax(weights[0]) == 0 and np.argmax(weights[1]) == 1
    np.testing.assert_allclose(outputs[0], [[2.0]], rtol=1e-5)
    np.testing.assert_allclose(outputs[1], [[6.0]], rtol=1e-5)


def test_stacked_levels_make_ple(keras_roundtrip, rng):
    inputs = keras.Input((6,))
    level_1 = CGC(2, 2, 1, [8], seed=1)
    level_2 = CGC(2, 2, 1, [4], is_last=True, return_gate_weights=True, seed=2)
    hidden = level_1(inputs)
    assert len(hidden) == 3
    outputs, weights = level_2(hidden)
    model = keras.Model(inputs, outputs + weights)
    x = rng.normal(size=(5, 6)).astype("float32")
    result = model.predict(x, verbose=0)
    assert [r.shape for r in result] == [(5, 4), (5, 4), (5, 3), (5, 3)]
    # level 2's task and shared experts see level 1's outputs (width 8)
    assert level_2.task_experts[0].mlp.dense_layers[0].kernel.shape == (8, 4)
    assert level_2.shared_experts[0].mlp.dense_layers[0].kernel.shape == (8, 4)
    loaded = keras_roundtrip(model)
    for before, after in zip(result, loaded.predict(x, verbose=0)):
        np.testing.assert_allclose(after, before, rtol=1e-6)


def test_all_experts_start_different():
    for seed in (None, 3):
        layer = CGC(2, 2, 2, [4], seed=seed)
        layer.build((None, 4))
        kernels = [
            np.asarray(e.mlp.dense_layers[0].kernel)
            for e in layer.task_experts + layer.shared_experts
        ]
        assert len(kernels) == 6
        for i in range(len(kernels)):
            for j in range(i + 1, len(kernels)):
                assert not np.allclose(kernels[i], kernels[j]), (seed, i, j)


def test_seed_makes_the_layer_reproducible():
    a, b = CGC(2, 1, 1, [4], seed=7), CGC(2, 1, 1, [4], seed=7)
    a.build((None, 3))
    b.build((None, 3))
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)


def test_config_round_trip():
    layer = CGC(3, 2, 1, [8, 4], is_last=True, return_gate_weights=True,
                expert_activation="tanh", dropout=0.1, seed=4)
    config = layer.get_config()
    assert set(config) - BASE_KEYS == constructor_args(CGC)
    json.dumps(config)
    assert CGC.from_config(config).get_config() == config


def test_gradients_reach_every_weight(rng, gradients):
    layer = CGC(2, 2, 1, [6], expert_activation="tanh")
    x = rng.normal(size=(16, 4)).astype("float32")
    layer.build((None, 4))
    # 5 experts (kernel, bias) + 2 task gates + 1 shared gate (kernel, bias)
    assert len(layer.trainable_weights) == 5 * 2 + 3 * 2
    targets = [keras.ops.convert_to_tensor(rng.normal(size=(16, 6)).astype("float32")) for _ in range(3)]

    def forward():
        outputs = layer(x, training=True)
        return sum(keras.ops.mean((o - t) ** 2) for o, t in zip(outputs, targets))

    grads, _ = gradients(forward, layer)
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None, weight.path
        assert np.any(np.asarray(grad) != 0), weight.path


def test_shared_experts_only_is_allowed(rng):
    layer = CGC(2, 0, 2, [3], is_last=True, return_gate_weights=True)
    outputs, weights = layer(rng.normal(size=(2, 4)).astype("float32"))
    assert [tuple(w.shape) for w in weights] == [(2, 2)] * 2


def test_wrong_number_of_inputs():
    layer = CGC(2, 1, 1, [4])
    with pytest.raises(ValueError, match="num_tasks=2 expects one tensor or a list of 3"):
        layer([np.ones((2, 4), "float32")] * 2)


BAD_ARGUMENTS = [
    ({"num_tasks": 0}, "Received: num_tasks=0"),
    ({"num_task_experts": -1}, "Received: num_task_experts=-1"),
    ({"num_shared_experts": 1.5}, "Received: num_shared_experts=1.5"),
    (
        {"num_task_experts": 0, "num_shared_experts": 0},
        "Received: num_task_experts=0, num_shared_experts=0",
    ),
    ({"expert_units": [4, 0]}, r"Received: expert_units=\[4, 0\]"),
    ({"expert_units": 8}, r"one width per layer \(one layer of 8 units: \[8\]\)\. Received: expert_units=8$"),
    ({"is_last": "no"}, "Received: is_last='no'"),
    ({"expert_activation": "nope"}, "Received: expert_activation='nope'"),
    ({"dropout": 2}, "Received: dropout=2"),
    ({"seed": -1}, "Received: seed=-1"),
]


def test_bad_arguments():
    # one test item for all cases: each item costs a Keras session teardown
    for kwargs, match in BAD_ARGUMENTS:
        args = {"num_tasks": 2, "num_task_experts": 1, "num_shared_experts": 1,
                "expert_units": [4], **kwargs}
        with pytest.raises(ValueError, match=match):
            CGC(**args)


def test_cgc_level_with_an_input_per_task_by_hand():
    """Linear one-unit experts with kernels 1 (task 0), 2 (task 1), 3 (shared) and zero gates
    on x_1 = 1, x_2 = 2, x_s = 3 (two features each): expert outputs 2, 8, 18; task 0 mixes
    (2 + 18) / 2 = 10, task 1 (8 + 18) / 2 = 13, the shared gate (2 + 8 + 18) / 3."""
    layer = CGC(2, 1, 1, [1], expert_activation="linear", return_gate_weights=True)
    layer.build([(None, 2)] * 3)
    for expert, value in zip(list(layer.task_experts) + list(layer.shared_experts), (1.0, 2.0, 3.0)):
        expert.mlp.dense_layers[0].kernel.assign(np.full((2, 1), value, "float32"))
    for gate in list(layer.task_gates) + [layer.shared_gate]:
        gate.kernel.assign(np.zeros(gate.kernel.shape, "float32"))
    inputs = [np.full((1, 2), v, "float32") for v in (1.0, 2.0, 3.0)]
    outputs, weights = layer(inputs)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs[0]), [[10.0]], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs[1]), [[13.0]], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs[2]), [[28.0 / 3]], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights[0]), [[0.5, 0.5]], rtol=1e-6)
