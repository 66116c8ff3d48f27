import math

import keras
import numpy as np
import pytest

from mtlrec.layers import AttentionPooling

B, T, H, Q, P = 4, 5, 6, 3, 2

MASK = np.array(
    [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 0, 0, 0],  # all padding
    ],
    dtype=bool,
)


def reference(hidden, query, props, mask, layer):
    """Numpy attention pooling with the layer's own weights."""
    pre = hidden @ np.asarray(layer.hidden_kernel)
    pre = pre + (query @ np.asarray(layer.query_kernel))[:, None, :]
    if props is not None:
        pre = pre + props @ np.asarray(layer.property_kernel)
    scores = np.tanh(pre + np.asarray(layer.bias)) @ np.asarray(layer.score_kernel)
    weights = np.zeros_like(scores)
    for b in range(scores.shape[0]):
        valid = mask[b]
        if valid.any():
            e = np.exp(scores[b, valid] - scores[b, valid].max())
            weights[b, valid] = e / e.sum()
    return (weights[:, :, None] * hidden).sum(axis=1), weights


def _data(rng):
    return (
        rng.normal(size=(B, T, H)).astype("float32"),
        rng.normal(size=(B, Q)).astype("float32"),
        rng.normal(size=(B, T, P)).astype("float32"),
    )


@pytest.mark.parametrize("with_properties", [False, True])
def test_matches_numpy_reference(rng, with_properties):
    hidden, query, props = _data(rng)
    layer = AttentionPooling(8, return_weights=True, seed=1)
    inputs = [hidden, query, props] if with_properties else [hidden, query]
    pooled, weights = layer(inputs, mask=MASK)
    ref_pooled, ref_weights = reference(
        hidden, query, props if with_properties else None, MASK, layer
    )
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pooled), ref_pooled, atol=1e-5)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), [1, 1, 1, 0], atol=1e-6)


def test_zero_kernels_give_mean_of_valid_steps():
    layer = AttentionPooling(2, return_weights=True, kernel_initializer="zeros")
    hidden = np.array([[[1.0], [3.0], [5.0]]], "float32")
    query = np.ones((1, 1), "float32")
    pooled, weights = layer([hidden, query], mask=np.array([[True, True, False]]))
    np.testing.assert_allclose(np.asarray(weights), [[0.5, 0.5, 0.0]], atol=1e-7)
    np.testing.assert_allclose(np.asarray(pooled), [[2.0]], atol=1e-6)


def test_two_steps_by_hand():
    # units = h = q = 1, W_h = 1, W_q = 0, b = 0, v = 1: scores = tanh(h_t).
    # h = [0, 1] -> a = softmax([0, tanh 1]) = [1, e^tanh1] / (1 + e^tanh1)
    layer = AttentionPooling(1, return_weights=True, kernel_initializer="ones")
    layer.build([(None, 2, 1), (None, 1)])
    layer.query_kernel.assign([[0.0]])
    hidden = np.array([[[0.0], [1.0]]], "float32")
    pooled, weights = layer([hidden, np.array([[7.0]], "float32")])
    e = math.exp(math.tanh(1.0))
    a = [1.0 / (1.0 + e), e / (1.0 + e)]  # [0.318112, 0.681888]
    np.testing.assert_allclose(np.asarray(weights)[0], a, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pooled)[0, 0], a[1], atol=1e-6)


@pytest.mark.parametrize("with_properties", [False, True])
def test_padded_values_change_nothing(rng, with_properties):
    hidden, query, props = _data(rng)
    layer = AttentionPooling(4, return_weights=True, seed=2)
    make = (lambda h, p: [h, query, p]) if with_properties else (lambda h, p: [h, query])
    base_pooled, base_weights = layer(make(hidden, props), mask=MASK)
    hidden2, props2 = hidden.copy(), props.copy()
    hidden2[~MASK] = np.inf
    props2[~MASK] = np.nan
    pooled, weights = layer(make(hidden2, props2), mask=MASK)
    np.testing.assert_array_equal(np.asarray(base_pooled), np.asarray(pooled))
    np.testing.assert_array_equal(np.asarray(base_weights), np.asarray(weights))
    assert np.all(np.asarray(weights)[~MASK] == 0.0)


def test_all_padding_row_gives_zeros_and_finite_gradients(rng, gradients):
    hidden, query, props = _data(rng)
    layer = AttentionPooling(4, return_weights=True, seed=3)

    def forward(hidden):
        pooled, weights = layer([hidden, query, props], mask=MASK)
        return keras.ops.sum(pooled), (pooled, weights)

    grads, (pooled, weights) = gradients(forward, layer, [hidden])
    np.testing.assert_array_equal(pooled[3], np.zeros(H))
    np.testing.assert_array_equal(weights[3], np.zeros(T))
    assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_array_equal(grads[-1][~MASK], 0.0)  # d loss / d hidden


def test_query_and_properties_change_the_output(rng):
    hidden, query, props = _data(rng)
    layer = AttentionPooling(4, seed=4)
    base = np.asarray(layer([hidden, query, props], mask=MASK))
    other_query = np.asarray(layer([hidden, query + 1.0, props], mask=MASK))
    other_props = np.asarray(layer([hidden, query, props + 1.0], mask=MASK))
    assert np.abs(base - other_query)[:3].max() > 1e-4
    assert np.abs(base - other_props)[:3].max() > 1e-4


def test_gradients_reach_every_weight(rng, gradients):
    hidden, query, props = _data(rng)
    layer = AttentionPooling(4, seed=5)
    grads, _ = gradients(
        lambda: keras.ops.sum(keras.ops.square(layer([hidden, query, props], mask=MASK))), layer
    )
    assert len(grads) == 5
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None, weight.path
        assert np.abs(np.asarray(grad)).max() > 0, weight.path


def test_mask_propagated_from_sequence_layer():
    ids = keras.Input((T,), dtype="int32")
    user = keras.Input((Q,))
    hidden = keras.layers.Embedding(10, H, mask_zero=True)(ids)
    layer = AttentionPooling(3, return_weights=True, seed=1)
    model = keras.Model([ids, user], layer([hidden, user]))
    id_values = np.array([[3, 4, 0, 0, 0], [0, 0, 0, 0, 0]], "int32")
    _, weights = model([id_values, np.ones((2, Q), "float32")])
    weights = np.asarray(weights)
    assert np.all(weights[0, 2:] == 0) and np.all(weights[1] == 0)
    np.testing.assert_allclose(weights[0].sum(), 1.0, atol=1e-6)


@pytest.mark.parametrize("with_properties", [False, True])
def test_save_load_in_functional_model(rng, keras_roundtrip, with_properties):
    hidden_in = keras.Input((T, H))
    query_in = keras.Input((Q,))
    props_in = keras.Input((T, P))
    mask_in = keras.Input((T,), dtype="bool")
    layer = AttentionPooling(4, return_weights=True, seed=6)
    seq_inputs = [hidden_in, query_in, props_in] if with_properties else [hidden_in, query_in]
    pooled, weights = layer(seq_inputs, mask=mask_in)
    model = keras.Model(
        [hidden_in, query_in, props_in, mask_in], {"pooled": pooled, "weights": weights}
    )
    hidden, query, props = _data(rng)
    data = [hidden, query, props, MASK]
    before = model(data)
    restored = keras_roundtrip(model)
    after = restored(data)
    for key in ("pooled", "weights"):
        np.testing.assert_array_equal(np.asarray(before[key]), np.asarray(after[key]))
    assert np.asarray(after["pooled"]).shape == (B, H)
    assert np.asarray(after["weights"]).shape == (B, T)


def test_config_round_trip():
    layer = AttentionPooling(5, return_weights=True, kernel_initializer="he_uniform", seed=2)
    config = layer.get_config()
    for key, value in {
        "units": 5,
        "return_weights": True,
        "kernel_initializer": "he_uniform",
        "seed": 2,
    }.items():
        assert config[key] == value
    assert AttentionPooling.from_config(config).get_config() == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": -3}, "Received: units=-3"),
        ({"units": "8"}, "Received: units='8'"),
        ({"units": [8]}, r"Received: units=\[8\]"),  # one width: an int, never a list
        ({"units": 2, "return_weights": 1}, "Received: return_weights=1"),
        ({"units": 2, "seed": "x"}, "Received: seed='x'"),
        ({"units": 2, "kernel_initializer": "nope"}, "Received: kernel_initializer='nope'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionPooling(**kwargs)


def test_bad_inputs():
    hidden = np.zeros((2, T, H), "float32")
    with pytest.raises(ValueError, match="expects inputs"):
        AttentionPooling(2)(hidden)
    with pytest.raises(ValueError, match="query of rank 2"):
        AttentionPooling(2)([hidden, np.zeros((2, T, Q), "float32")])
    with pytest.raises(ValueError, match="same number of steps"):
        AttentionPooling(2)(
            [hidden, np.zeros((2, Q), "float32"), np.zeros((2, T + 1, P), "float32")]
        )
