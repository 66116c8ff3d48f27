"""All experts of a level in one matmul per layer: the same outputs, gradients, batch norm
statistics and dropout as calling the experts one by one, over the experts' own weights (so
a seed gives the same initial model as before)."""

import keras
import numpy as np
import pytest

from mtlrec.conventions.seeding import derive_seed
from mtlrec.layers import CGC, Expert, MixtureOfExperts
from mtlrec.layers.experts.expert_stack import expert_outputs_one_by_one, stacked_expert_outputs


def _experts(n, seed, **kwargs):
    experts = [Expert([6, 3], seed=derive_seed(seed, f"expert_{i}"), name=f"expert_{i}", **kwargs)
               for i in range(n)]
    for e in experts:
        e.build((None, 5))
    return experts


@pytest.mark.parametrize("per_expert", [False, True])
def test_stacked_outputs_equal_the_experts_called_one_by_one(rng, per_expert):
    experts = _experts(3, seed=4)
    if per_expert:
        inputs = [rng.normal(size=(7, 5)).astype("float32") for _ in experts]
    else:
        inputs = rng.normal(size=(7, 5)).astype("float32")
    got = keras.ops.convert_to_numpy(stacked_expert_outputs(experts, inputs))
    each = inputs if per_expert else [inputs] * 3
    want = np.stack([keras.ops.convert_to_numpy(e(x)) for e, x in zip(experts, each)], axis=1)
    assert got.shape == (7, 3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[:, 0], got[:, 1])  # the experts differ


def test_batch_norm_statistics_and_dropout_are_each_experts_own(rng):
    x = rng.normal(size=(16, 5)).astype("float32") * 3.0 + 1.0
    a = _experts(2, seed=9, batch_norm=True, dropout=0.5)
    b = _experts(2, seed=9, batch_norm=True, dropout=0.5)
    got = keras.ops.convert_to_numpy(stacked_expert_outputs(a, x, training=True))
    want = keras.ops.convert_to_numpy(expert_outputs_one_by_one(b, x, training=True))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert (got == 0).mean() > 0.3  # dropout ran (relu zeros and dropped units)
    for ea, eb in zip(a, b):
        for va, vb in zip(ea.non_trainable_weights, eb.non_trainable_weights):
            np.testing.assert_allclose(np.asarray(va), np.asarray(vb), rtol=1e-5, atol=1e-6)
    moving = [np.asarray(e.mlp.norm_layers[0].moving_mean) for e in a]
    assert not np.allclose(moving[0], 0.0) and not np.allclose(moving[0], moving[1])


def test_gradients_equal_the_one_by_one_gradients(rng, gradients):
    x = rng.normal(size=(4, 5)).astype("float32")
    stacked = MixtureOfExperts(3, [6, 3], 2, seed=2, batch_norm=False)
    single = MixtureOfExperts(3, [6, 3], 2, seed=2, batch_norm=False)
    stacked.build((None, 5))
    single.build((None, 5))
    expert_sum = lambda e, xx: keras.ops.sum(e(xx) ** 2)  # noqa: E731

    def via_stack(xx):
        return keras.ops.sum(stacked_expert_outputs(stacked.experts, xx) ** 2)

    def one_by_one(xx):
        return sum(expert_sum(e, xx) for e in single.experts)

    got, _ = gradients(via_stack, stacked, [x])
    want, _ = gradients(one_by_one, single, [x])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


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


def test_a_seed_gives_the_kernels_it_gave_each_expert_before():
    """The stacked computation reads the experts' own kernels: expert i's first kernel is
    still glorot_uniform seeded by the path seed -> expert_i -> dense_0."""
    layer = MixtureOfExperts(3, [4], 1, seed=11, batch_norm=False)
    layer.build((None, 5))
    for i, expert in enumerate(layer.experts):
        seed = derive_seed(derive_seed(11, f"expert_{i}"), "dense_0")
        want = keras.ops.convert_to_numpy(keras.initializers.GlorotUniform(seed=seed)((5, 4)))
        np.testing.assert_array_equal(np.asarray(expert.mlp.dense_layers[0].kernel), want)
    kernels = [np.asarray(e.mlp.dense_layers[0].kernel) for e in layer.experts]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])


def test_experts_built_differently_run_one_by_one(rng):
    x = rng.normal(size=(3, 5)).astype("float32")
    experts = [Expert([6, 3], seed=1), Expert([4, 3], seed=2)]
    for e in experts:
        e.build((None, 5))
    got = keras.ops.convert_to_numpy(stacked_expert_outputs(experts, x))
    want = np.stack([keras.ops.convert_to_numpy(e(x)) for e in experts], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
