import keras
import numpy as np
import pytest

from mtlrec.layers import SelfAttentionEncoder

B, T, D, P = 4, 5, 3, 3

MASK = np.array(
    [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0],
        [1, 0, 1, 0, 0],  # a null inside the history
        [0, 0, 0, 0, 0],  # no history
    ],
    dtype=bool,
)
#: steps from each step to the candidate (padding after the last real step: 0)
POSITIONS = np.array([[5, 4, 3, 2, 1], [3, 2, 1, 0, 0], [3, 2, 1, 0, 0], [0, 0, 0, 0, 0]])


def _norm(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * gamma + beta


def reference(history, candidate, mask, layer):
    """Numpy BST encoder with the layer's weights: every position through every block,
    row by row, heads one by one; the candidate's output."""
    w = {k: np.asarray(v) for k, v in ((v.name, v) for v in layer.weights)}
    heads = layer.num_heads
    out = []
    for b in range(history.shape[0]):
        steps = np.concatenate([np.where(mask[b][:, None], history[b], 0.0), candidate[b][None]], 0)
        pos = np.concatenate([POSITIONS[b], [0]])
        x = np.concatenate([steps, w["position_embeddings"][pos]], -1)
        keep = np.concatenate([mask[b], [True]])
        for i in range(layer.num_layers):
            p = f"block_{i}_"
            q, k, v = (x @ w[f"{p}{n}_kernel"] + w[f"{p}{n}_bias"] for n in ("query", "key", "value"))
            size = x.shape[-1] // heads
            merged = np.zeros_like(x)
            for h in range(heads):
                cols = slice(h * size, (h + 1) * size)
                scores = q[:, cols] @ k[:, cols].T / np.sqrt(size)
                scores = np.where(keep[None, :], scores, -np.inf)
                a = np.exp(scores - scores.max(-1, keepdims=True))
                a = a / a.sum(-1, keepdims=True)
                merged[:, cols] = a @ v[:, cols]
            s = _norm(x + merged @ w[f"{p}output_kernel"] + w[f"{p}output_bias"], w[f"{p}norm_1_gamma"], w[f"{p}norm_1_beta"])
            hidden = s @ w[f"{p}ffn_kernel_1"] + w[f"{p}ffn_bias_1"]
            hidden = np.where(hidden > 0, hidden, 0.2 * hidden)  # leaky relu
            x = _norm(s + hidden @ w[f"{p}ffn_kernel_2"] + w[f"{p}ffn_bias_2"], w[f"{p}norm_2_gamma"], w[f"{p}norm_2_beta"])
        out.append(x[-1])
    return np.stack(out)


def _data(rng):
    return rng.normal(size=(B, T, D)).astype("float32"), rng.normal(size=(B, D)).astype("float32")


def _randomize(layer, rng):
    """Move every weight off its init (biases and norms start at 0 / 1)."""
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape).astype("float32") * 0.5)


@pytest.mark.parametrize("num_layers, num_heads", [(1, 1), (2, 2)])
def test_matches_numpy_reference(rng, num_layers, num_heads):
    history, candidate = _data(rng)
    layer = SelfAttentionEncoder(num_layers=num_layers, num_heads=num_heads, position_dim=P, ffn_units=7, seed=4)
    layer.build([(None, T, D), (None, D)])
    _randomize(layer, rng)
    out = np.asarray(layer([history, candidate], mask=MASK))
    assert out.shape == (B, D + P)
    np.testing.assert_allclose(out, reference(history, candidate, MASK, layer), atol=2e-5)


def test_positions_count_steps_back_from_the_candidate():
    positions = SelfAttentionEncoder._positions_from_candidate(keras.ops.convert_to_tensor(MASK))
    np.testing.assert_array_equal(np.asarray(positions), POSITIONS)


def test_padded_steps_change_no_output(rng):
    history, candidate = _data(rng)
    layer = SelfAttentionEncoder(num_layers=2, num_heads=2, position_dim=1, seed=1)
    changed = history.copy()
    changed[~MASK] = rng.normal(size=changed[~MASK].shape) * 1e3
    changed[3, 0, 0] = np.nan
    out = np.asarray(layer([history, candidate], mask=MASK))
    np.testing.assert_array_equal(np.asarray(layer([changed, candidate], mask=MASK)), out)
    # a row without history is the candidate attending to itself: finite
    assert np.isfinite(out).all()


def test_same_seed_same_weights_and_every_kernel_its_own():
    shapes = [(None, T, D), (None, D)]
    a, b = SelfAttentionEncoder(num_layers=2, seed=5), SelfAttentionEncoder(num_layers=2, seed=5)
    c = SelfAttentionEncoder(num_layers=2, seed=6)
    for layer in (a, b, c):
        layer.build(shapes)
    kernels = []
    for wa, wb, wc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
        if "kernel" in wa.name or "position" in wa.name:
            assert not np.array_equal(np.asarray(wa), np.asarray(wc))
            kernels.append(np.asarray(wa))
    squares = [k for k in kernels if k.shape == (D + 8, D + 8)]
    assert len(squares) == 8  # query, key, value, output of two blocks, all different
    assert all(not np.array_equal(x, y) for i, x in enumerate(squares) for y in squares[i + 1:])


def test_dropout_is_seeded_and_only_in_training(rng):
    history, candidate = _data(rng)
    a = SelfAttentionEncoder(dropout=0.5, seed=3)
    b = SelfAttentionEncoder(dropout=0.5, seed=3)
    train_a = np.asarray(a([history, candidate], mask=MASK, training=True))
    train_b = np.asarray(b([history, candidate], mask=MASK, training=True))
    np.testing.assert_array_equal(train_a, train_b)
    infer = np.asarray(a([history, candidate], mask=MASK))
    assert not np.allclose(train_a, infer)


def test_keras_round_trip(rng, keras_roundtrip):
    history, candidate = _data(rng)
    h = keras.Input((T, D))
    t = keras.Input((D,))
    m = keras.Input((T,), dtype="bool")
    out = SelfAttentionEncoder(num_layers=2, num_heads=1, position_dim=2, seed=2, name="bst")([h, t], mask=m)
    model = keras.Model([h, t, m], out)
    loaded = keras_roundtrip(model)
    np.testing.assert_array_equal(
        np.asarray(loaded([history, candidate, MASK])), np.asarray(model([history, candidate, MASK]))
    )
    assert loaded.get_layer("bst").get_config()["num_layers"] == 2


def test_longer_histories_share_the_last_position(rng):
    layer = SelfAttentionEncoder(max_len=2, seed=1)
    layer.build([(None, T, D), (None, D)])
    assert tuple(layer.position_embeddings.shape) == (3, 8)
    history, candidate = _data(rng)
    assert np.isfinite(np.asarray(layer([history, candidate], mask=MASK))).all()


def test_bad_arguments_say_what_is_expected():
    with pytest.raises(ValueError, match=r"num_heads to divide the model width 11 \(the step width 3 \+ position_dim 8\)"):
        SelfAttentionEncoder(num_heads=2).build([(None, T, D), (None, D)])
    with pytest.raises(ValueError, match="same known width d"):
        SelfAttentionEncoder().build([(None, T, 4), (None, 3)])
    with pytest.raises(ValueError, match="needs max_len"):
        SelfAttentionEncoder().build([(None, None, 4), (None, 4)])
    with pytest.raises(ValueError, match="num_layers"):
        SelfAttentionEncoder(num_layers=0)
