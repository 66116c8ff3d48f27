import keras
import numpy as np
import pytest

from mtlrec.layers import TargetAttention

B, T, D = 4, 5, 3

MASK = np.array(
    [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0],
        [1, 0, 1, 0, 0],  # a null inside the history
        [0, 0, 0, 0, 0],  # no history
    ],
    dtype=bool,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(history, candidate, mask, layer):
    """Numpy DIN attention with the layer's weights: the MLP on the concatenation itself."""
    t = np.broadcast_to(candidate[:, None, :], history.shape)
    x = np.concatenate([history, t, history - t, history * t], axis=-1)
    kernels = [np.asarray(k) for k in layer.kernels]
    biases = [np.asarray(b) for b in layer.biases]
    for i, (k, b) in enumerate(zip(kernels, biases)):
        if i:
            x = _sigmoid(x)
        x = x @ k + b
    weights = np.where(mask, x[..., 0], 0.0)
    return (weights[..., None] * np.where(mask[..., None], history, 0.0)).sum(1), weights


def _data(rng):
    return rng.normal(size=(B, T, D)).astype("float32"), rng.normal(size=(B, D)).astype("float32")


def test_two_steps_by_hand():
    # d = 1, one linear hidden unit with kernel [W_h, W_t, W_d, W_p] = [0.5, 0.1, 0.2, 0.4],
    # then a score kernel 1: a_j = 0.5 h + 0.1 t + 0.2 (h - t) + 0.4 h t.
    # h = [2, -1], t = 3: a = [1 + 0.3 - 0.2 + 2.4, -0.5 + 0.3 - 0.8 - 1.2] = [3.5, -2.2]
    # out = 3.5 * 2 + (-2.2) * (-1) = 9.2 (no softmax: the weights sum to 1.3)
    layer = TargetAttention(units=[1], activation="linear", return_weights=True)
    layer.build([(None, 2, 1), (None, 1)])
    layer.kernels[0].assign([[0.5], [0.1], [0.2], [0.4]])
    layer.kernels[1].assign([[1.0]])
    history, candidate = np.array([[[2.0], [-1.0]]], "float32"), np.array([[3.0]], "float32")
    pooled, weights = layer([history, candidate])
    np.testing.assert_allclose(np.asarray(weights), [[3.5, -2.2]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pooled), [[9.2]], rtol=1e-6)
    # the second step padded: its weight is 0 and only the first step counts
    pooled, weights = layer([history, candidate], mask=np.array([[True, False]]))
    np.testing.assert_allclose(np.asarray(weights), [[3.5, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pooled), [[7.0]], rtol=1e-6)


def test_matches_the_concatenated_formula(rng):
    history, candidate = _data(rng)
    layer = TargetAttention(units=[5, 4], return_weights=True, seed=3)
    pooled, weights = layer([history, candidate], mask=MASK)
    ref_pooled, ref_weights = reference(history, candidate, MASK, layer)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pooled), ref_pooled, atol=1e-5)
    assert not np.allclose(np.asarray(weights)[0].sum(), 1.0)  # not a softmax
    np.testing.assert_array_equal(np.asarray(pooled)[3], np.zeros(D))  # no history: zeros


def test_padded_steps_change_no_output_nor_gradient(rng, gradients):
    history, candidate = _data(rng)
    layer = TargetAttention(units=[6], seed=1)
    changed = history.copy()
    changed[~MASK] = rng.normal(size=changed[~MASK].shape) * 1e3
    changed[3, 0, 0] = np.nan
    out = np.asarray(layer([history, candidate], mask=MASK))
    np.testing.assert_array_equal(np.asarray(layer([changed, candidate], mask=MASK)), out)

    mask, query = keras.ops.convert_to_tensor(MASK), keras.ops.convert_to_tensor(candidate)
    grads, _ = gradients(lambda x: keras.ops.sum(layer([x, query], mask=mask)), layer, [changed])
    grad = grads[-1]
    assert np.all(grad[~MASK] == 0) and np.isfinite(grad).all()


def test_same_seed_same_weights_and_every_kernel_its_own():
    shapes = [(None, T, D), (None, D)]
    a, b, c = TargetAttention([4, 4], seed=5), TargetAttention([4, 4], seed=5), TargetAttention([4, 4], seed=6)
    for layer in (a, b, c):
        layer.build(shapes)
    for wa, wb, wc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
        if "kernel" in wa.name:
            assert not np.array_equal(np.asarray(wa), np.asarray(wc))
    # kernels 0 and 1 (both of 4 columns) do not start from the same numbers
    assert not np.allclose(np.asarray(a.kernels[0])[:4], np.asarray(a.kernels[1]))


def test_keras_round_trip(rng, keras_roundtrip):
    history, candidate = _data(rng)
    h = keras.Input((T, D))
    t = keras.Input((D,))
    m = keras.Input((T,), dtype="bool")
    out = TargetAttention(units=[4], activation="relu", seed=2, name="din")([h, t], mask=m)
    model = keras.Model([h, t, m], out)
    loaded = keras_roundtrip(model)
    np.testing.assert_array_equal(
        np.asarray(loaded([history, candidate, MASK])), np.asarray(model([history, candidate, MASK]))
    )
    assert loaded.get_layer("din").get_config()["units"] == [4]


def test_bad_shapes_say_what_is_expected():
    with pytest.raises(ValueError, match="same known width d"):
        TargetAttention().build([(None, T, 4), (None, 3)])
    with pytest.raises(ValueError, match=r"\[history \(B, T, d\), candidate \(B, d\)\]"):
        TargetAttention().build((None, T, 4))
    with pytest.raises(ValueError, match="units"):
        TargetAttention(units=[])
