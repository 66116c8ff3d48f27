import math

import keras
import numpy as np
import pytest

from mtlrec.layers import PropertyGatedLSTM

DE, DP, T = 4, 3, 5


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(items, props, mask, kernel, recurrent, prop_kernel, bias, units):
    """Numpy PG-LSTM: gate blocks [i, f, c, o]; properties feed [i, f, o]."""
    u = units
    batch, steps, _ = items.shape
    h = np.zeros((batch, u))
    c = np.zeros((batch, u))
    seq = np.zeros((batch, steps, u))
    for t in range(steps):
        z = items[:, t] @ kernel + h @ recurrent + bias
        p = props[:, t] @ prop_kernel
        i = _sigmoid(z[:, :u] + p[:, :u])
        f = _sigmoid(z[:, u : 2 * u] + p[:, u : 2 * u])
        cand = np.tanh(z[:, 2 * u : 3 * u])
        o = _sigmoid(z[:, 3 * u :] + p[:, 2 * u :])
        c_new = f * c + i * cand
        h_new = o * np.tanh(c_new)
        m = mask[:, t : t + 1]
        h = np.where(m, h_new, h)
        c = np.where(m, c_new, c)
        seq[:, t] = np.where(m, h_new, 0.0)
    return seq, h


def _weights(layer):
    return [np.asarray(w) for w in layer.weights]


def _data(rng, batch=4):
    items = rng.normal(size=(batch, T, DE)).astype("float32")
    props = rng.normal(size=(batch, T, DP)).astype("float32")
    mask = np.array(
        [
            [1, 1, 1, 1, 1],  # full
            [1, 1, 1, 0, 0],  # right padding
            [0, 0, 1, 1, 1],  # left padding
            [0, 0, 0, 0, 0],  # all padding
        ][:batch],
        dtype=bool,
    )
    return items, props, mask


@pytest.mark.parametrize("return_sequences", [True, False])
def test_matches_numpy_reference(rng, return_sequences):
    items, props, mask = _data(rng)
    layer = PropertyGatedLSTM(6, return_sequences=return_sequences, seed=3)
    out = np.asarray(layer([items, props], mask=mask))
    seq, last = reference(items, props, mask, *_weights(layer), units=6)
    expected = seq if return_sequences else last
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_two_steps_by_hand():
    # units = de = dp = 1. kernel [i, f, c, o] = [0, 0, 1, 0], no recurrence,
    # property kernel [i, f, o] = 0, bias [0, 1, 0, 0] (the unit forget bias).
    layer = PropertyGatedLSTM(1, return_sequences=True)
    layer.build([(None, 2, 1), (None, 2, 1)])
    layer.kernel.assign([[0.0, 0.0, 1.0, 0.0]])
    layer.recurrent_kernel.assign(np.zeros((1, 4)))
    layer.property_kernel.assign(np.zeros((1, 3)))
    np.testing.assert_array_equal(np.asarray(layer.bias), [0.0, 1.0, 0.0, 0.0])
    items = np.array([[[1.0], [0.0]]], "float32")
    props = np.array([[[2.0], [-1.0]]], "float32")
    out = np.asarray(layer([items, props]))
    # step 1: i = o = sigma(0) = 0.5, c~ = tanh(1), c_0 = 0
    #   c_1 = 0.5 * tanh(1) = 0.380797, h_1 = 0.5 * tanh(c_1) = 0.181700
    # step 2: i = o = 0.5, c~ = tanh(0) = 0, f = sigma(1) = 0.731059
    #   c_2 = 0.731059 * 0.380797 = 0.278385, h_2 = 0.5 * tanh(c_2) = 0.135705
    np.testing.assert_allclose(out[0, :, 0], [0.1816997, 0.1357048], atol=1e-6)


def test_single_step_property_gate_by_hand():
    # Only the input gate reads the property: P_i = 1, p = ln(3), so
    # i = sigma(ln 3) = 0.75; c~ = tanh(1); o = 0.5:
    # h = 0.5 * tanh(0.75 * tanh(1)).
    layer = PropertyGatedLSTM(1)
    layer.build([(None, 1, 1), (None, 1, 1)])
    layer.kernel.assign([[0.0, 0.0, 1.0, 0.0]])
    layer.recurrent_kernel.assign(np.zeros((1, 4)))
    layer.property_kernel.assign([[1.0, 0.0, 0.0]])
    items = np.array([[[1.0]]], "float32")
    props = np.array([[[math.log(3.0)]]], "float32")
    out = np.asarray(layer([items, props]))
    assert out.shape == (1, 1)
    np.testing.assert_allclose(out[0, 0], 0.5 * math.tanh(0.75 * math.tanh(1.0)), atol=1e-6)


def test_weight_shapes_and_forget_bias():
    layer = PropertyGatedLSTM(3)
    layer.build([(None, T, DE), (None, T, DP)])
    assert tuple(layer.kernel.shape) == (DE, 12)
    assert tuple(layer.recurrent_kernel.shape) == (3, 12)
    # properties gate i, f, o only: the candidate never sees them
    assert tuple(layer.property_kernel.shape) == (DP, 9)
    np.testing.assert_array_equal(
        np.asarray(layer.bias), [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    )


def test_properties_change_the_output(rng):
    items, props, _ = _data(rng)
    layer = PropertyGatedLSTM(5, seed=1)
    a = np.asarray(layer([items, props]))
    b = np.asarray(layer([items, props + 1.0]))
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("return_sequences", [True, False])
def test_padded_values_change_nothing(rng, return_sequences):
    items, props, mask = _data(rng)
    layer = PropertyGatedLSTM(5, return_sequences=return_sequences, seed=2)
    base = np.asarray(layer([items, props], mask=mask))
    items2, props2 = items.copy(), props.copy()
    items2[~mask] = rng.normal(size=items2[~mask].shape) * 100
    props2[~mask] = np.nan
    other = np.asarray(layer([items2, props2], mask=mask))
    np.testing.assert_array_equal(base, other)
    if return_sequences:
        assert np.all(base[~mask] == 0.0)
        assert np.all(np.abs(base[mask]) > 0.0)


def test_all_padding_row_is_zero_and_finite(rng, gradients):
    items, props, mask = _data(rng)
    layer = PropertyGatedLSTM(4, seed=0)

    def forward(items):
        out = layer([items, props], mask=mask)
        return keras.ops.sum(out), out

    grads, out = gradients(forward, layer, [items])
    np.testing.assert_array_equal(out[3], np.zeros(4))
    assert all(np.all(np.isfinite(g)) for g in grads)
    # the padded steps' inputs get no gradient
    np.testing.assert_array_equal(grads[-1][~mask], 0.0)


def test_left_padding_equals_unpadded_sequence(rng):
    items, props, _ = _data(rng, batch=1)
    layer = PropertyGatedLSTM(4, seed=5)
    mask = np.array([[0, 0, 1, 1, 1]], bool)
    padded = np.asarray(layer([items, props], mask=mask))
    short = np.asarray(layer([items[:, 2:], props[:, 2:]]))
    np.testing.assert_allclose(padded, short, atol=1e-6)


def test_last_state_is_last_valid_output(rng):
    items, props, mask = _data(rng)
    seq_layer = PropertyGatedLSTM(4, return_sequences=True, seed=7)
    last_layer = PropertyGatedLSTM(4, seed=7)
    seq = np.asarray(seq_layer([items, props], mask=mask))
    last = np.asarray(last_layer([items, props], mask=mask))
    np.testing.assert_allclose(last[1], seq[1, 2], atol=1e-6)  # right padded
    np.testing.assert_allclose(last[2], seq[2, 4], atol=1e-6)  # left padded


def test_no_mask_means_all_steps(rng):
    items, props, _ = _data(rng)
    layer = PropertyGatedLSTM(3, seed=1)
    np.testing.assert_allclose(
        np.asarray(layer([items, props])),
        np.asarray(layer([items, props], mask=np.ones((4, T), bool))),
        atol=1e-6,
    )


def test_gradients_reach_every_weight(rng, gradients):
    items, props, mask = _data(rng)
    layer = PropertyGatedLSTM(4, return_sequences=True, seed=1)
    grads, _ = gradients(lambda: keras.ops.sum(keras.ops.square(layer([items, props], mask=mask))), layer)
    assert len(grads) == 4
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None, weight.path
        assert np.abs(np.asarray(grad)).max() > 0, weight.path


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function: TensorFlow only")
def test_unknown_batch_and_length_in_tf_function(rng):
    import tensorflow as tf

    items, props, mask = _data(rng)
    layer = PropertyGatedLSTM(3, return_sequences=True, seed=1)
    eager = np.asarray(layer([items, props], mask=mask))
    spec = [
        tf.TensorSpec((None, None, DE)),
        tf.TensorSpec((None, None, DP)),
        tf.TensorSpec((None, None), tf.bool),
    ]

    @tf.function(input_signature=spec)
    def run(a, b, m):
        out = layer([a, b], mask=m)
        assert out.shape.as_list() == [None, None, 3]
        return out

    np.testing.assert_allclose(np.asarray(run(items, props, mask)), eager, atol=1e-6)


def test_keras_mask_is_propagated_from_embeddings():
    ids = keras.Input((T,), dtype="int32")
    behaviors = keras.Input((T,), dtype="int32")
    items = keras.layers.Embedding(10, DE, mask_zero=True)(ids)
    props = keras.layers.Embedding(4, DP)(behaviors)
    layer = PropertyGatedLSTM(3, return_sequences=True, seed=1)
    model = keras.Model([ids, behaviors], layer([items, props]))
    id_values = np.array([[3, 4, 5, 0, 0], [0, 0, 0, 0, 0]], "int32")
    behavior_values = np.array([[1, 2, 3, 1, 2], [1, 1, 1, 1, 1]], "int32")
    out = np.asarray(model([id_values, behavior_values]))
    assert np.all(out[0, 3:] == 0) and np.all(out[1] == 0)
    assert np.all(np.abs(out[0, :3]) > 0)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_save_load_in_functional_model(rng, keras_roundtrip, return_sequences):
    items = keras.Input((T, DE))
    props = keras.Input((T, DP))
    mask = keras.Input((T,), dtype="bool")
    layer = PropertyGatedLSTM(4, return_sequences=return_sequences, seed=11)
    model = keras.Model([items, props, mask], layer([items, props], mask=mask))
    data = list(_data(rng))
    before = np.asarray(model(data))
    restored = keras_roundtrip(model)
    after = np.asarray(restored(data))
    np.testing.assert_array_equal(before, after)
    expected_shape = (4, T, 4) if return_sequences else (4, 4)
    assert after.shape == expected_shape
    # the mask input is still wired into the reloaded graph
    data[2] = np.ones_like(data[2])
    assert np.abs(np.asarray(restored(data)) - after).max() > 1e-4


def test_config_round_trip():
    layer = PropertyGatedLSTM(
        7,
        return_sequences=True,
        kernel_initializer="he_normal",
        recurrent_initializer="glorot_uniform",
        seed=9,
        name="pg",
    )
    config = layer.get_config()
    for key, value in {
        "units": 7,
        "return_sequences": True,
        "kernel_initializer": "he_normal",
        "recurrent_initializer": "glorot_uniform",
        "seed": 9,
    }.items():
        assert config[key] == value
    clone = PropertyGatedLSTM.from_config(config)
    assert clone.get_config() == config


def test_seed_reproducible_and_weights_distinct():
    shapes = [(None, T, DE), (None, T, DP)]
    a, b = PropertyGatedLSTM(4, seed=3), PropertyGatedLSTM(4, seed=3)
    a.build(shapes)
    b.build(shapes)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
    # kernel and property kernel share an initializer but not their values
    ka, pa = np.asarray(a.kernel), np.asarray(a.property_kernel)
    assert not np.allclose(ka[:DP, : 3 * 4], pa)
    c = PropertyGatedLSTM(4, seed=4)
    c.build(shapes)
    assert not np.allclose(np.asarray(c.kernel), ka)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": -3}, "Received: units=-3"),
        ({"units": 0}, "Received: units=0"),
        ({"units": 2.5}, "Received: units=2.5"),
        ({"units": [8]}, r"Received: units=\[8\]"),  # one width: an int, never a list
        ({"units": 2, "return_sequences": "yes"}, "Received: return_sequences='yes'"),
        ({"units": 2, "seed": 1.5}, "Received: seed=1.5"),
        ({"units": 2, "kernel_initializer": "nope"}, "Received: kernel_initializer='nope'"),
        (
            {"units": 2, "recurrent_initializer": 3},
            "Received: recurrent_initializer=3",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PropertyGatedLSTM(**kwargs)


def test_bad_inputs():
    layer = PropertyGatedLSTM(2)
    with pytest.raises(ValueError, match="expects inputs"):
        layer(np.zeros((2, T, DE), "float32"))
    with pytest.raises(ValueError, match="rank-3"):
        PropertyGatedLSTM(2)([np.zeros((2, DE), "float32"), np.zeros((2, DP), "float32")])
    with pytest.raises(ValueError, match="same number of steps"):
        PropertyGatedLSTM(2)(
            [np.zeros((2, T, DE), "float32"), np.zeros((2, T + 1, DP), "float32")]
        )


@pytest.mark.parametrize("return_sequences", [False, True])
def test_unrolled_and_scanned_steps_agree_with_gradients(rng, return_sequences, gradients):
    items, props, mask = _data(rng)
    unrolled = PropertyGatedLSTM(3, return_sequences=return_sequences, seed=2)
    scanned = PropertyGatedLSTM(3, return_sequences=return_sequences, seed=2)
    scanned.MAX_UNROLL = 0  # force the scan path for this static length
    results = []
    for layer in (unrolled, scanned):

        def forward(layer=layer):
            out = layer([items, props], mask=mask)
            return keras.ops.sum(out * out), out

        grads, out = gradients(forward, layer)
        results.append((out, grads))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-5)
