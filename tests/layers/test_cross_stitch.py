import inspect
import json

import keras
import numpy as np
import pytest

from mtlrec.layers import CrossStitch

BASE_KEYS = set(keras.layers.Layer().get_config())


def constructor_args(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def test_initial_matrix_two_and_three_columns():
    two = CrossStitch()
    two.build([(None, 4), (None, 4)])
    np.testing.assert_allclose(two.stitch, [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)
    three = CrossStitch(self_weight=0.8)
    three.build([(None, 4)] * 3)
    np.testing.assert_allclose(
        three.stitch, [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]], rtol=1e-6
    )


def test_per_channel_matrix_has_one_kxk_per_channel():
    layer = CrossStitch(self_weight=0.7, per_channel=True)
    layer.build([(None, 5)] * 3)
    assert tuple(layer.stitch.shape) == (5, 3, 3)
    expected = np.full((3, 3), 0.15) + np.eye(3) * (0.7 - 0.15)
    for channel in np.asarray(layer.stitch):
        np.testing.assert_allclose(channel, expected, rtol=1e-6)


@pytest.mark.parametrize("per_channel", [False, True])
def test_initial_output_is_the_convex_combination(per_channel, rng):
    x1, x2, x3 = (rng.normal(size=(4, 3)).astype("float32") for _ in range(3))
    out = CrossStitch(self_weight=0.6, per_channel=per_channel)([x1, x2, x3])
    np.testing.assert_allclose(out[0], 0.6 * x1 + 0.2 * x2 + 0.2 * x3, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.2 * x1 + 0.6 * x2 + 0.2 * x3, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[2], 0.2 * x1 + 0.2 * x2 + 0.6 * x3, rtol=1e-5, atol=1e-6)


def test_self_weight_one_is_the_identity(rng):
    x1, x2 = rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")
    out = CrossStitch(self_weight=1.0)([x1, x2])
    np.testing.assert_allclose(out[0], x1, rtol=1e-6)
    np.testing.assert_allclose(out[1], x2, rtol=1e-6)


def test_per_channel_mixing_by_hand():
    layer = CrossStitch(per_channel=True)
    layer.build([(None, 2), (None, 2)])
    # channel 0 swaps the columns, channel 1 sums them into the first and keeps the second
    layer.stitch.assign([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]]])
    x1 = np.array([[1.0, 2.0]], "float32")
    x2 = np.array([[10.0, 20.0]], "float32")
    out1, out2 = layer([x1, x2])
    np.testing.assert_allclose(out1, [[10.0, 22.0]])
    np.testing.assert_allclose(out2, [[1.0, 20.0]])


def test_shared_matrix_by_hand():
    layer = CrossStitch()
    layer.build([(None, 2), (None, 2)])
    layer.stitch.assign([[0.5, 0.5], [2.0, -1.0]])
    out1, out2 = layer([np.array([[1.0, 2.0]], "float32"), np.array([[3.0, 6.0]], "float32")])
    np.testing.assert_allclose(out1, [[2.0, 4.0]])
    np.testing.assert_allclose(out2, [[-1.0, -2.0]])


def test_compute_output_shape():
    assert CrossStitch().compute_output_shape([(None, 4), (None, 4)]) == [(None, 4), (None, 4)]


def test_config_round_trip():
    layer = CrossStitch(self_weight=0.75, per_channel=True)
    config = layer.get_config()
    assert set(config) - BASE_KEYS == constructor_args(CrossStitch)
    json.dumps(config)
    assert CrossStitch.from_config(config).get_config() == config


@pytest.mark.parametrize("per_channel", [False, True])
def test_keras_save_load(per_channel, keras_roundtrip, rng):
    a, b = keras.Input((3,)), keras.Input((3,))
    stitch = CrossStitch(per_channel=per_channel)
    outputs = stitch([keras.layers.Dense(3)(a), keras.layers.Dense(3)(b)])
    model = keras.Model([a, b], outputs)
    # move A away from its initial value so the reload must restore it
    stitch.stitch.assign(rng.normal(size=tuple(stitch.stitch.shape)))
    xa, xb = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 3)).astype("float32")
    loaded = keras_roundtrip(model)
    before = model.predict([xa, xb], verbose=0)
    for b_out, a_out in zip(before, loaded.predict([xa, xb], verbose=0)):
        np.testing.assert_allclose(a_out, b_out, rtol=1e-6)


@pytest.mark.parametrize("per_channel", [False, True])
def test_gradients_reach_the_stitch_and_every_column(per_channel, rng, gradients):
    layer = CrossStitch(per_channel=per_channel)
    xs = [rng.normal(size=(8, 3)).astype("float32") for _ in range(3)]
    coefs = [keras.ops.convert_to_tensor(rng.normal(size=(8, 3)).astype("float32")) for _ in range(3)]
    layer.build([x.shape for x in xs])
    grads, _ = gradients(
        lambda *xs: sum(keras.ops.sum(o * c) for o, c in zip(layer(list(xs)), coefs)), layer, xs
    )
    assert len(grads) == 1 + 3
    assert len(layer.trainable_weights) == 1
    for grad in grads:
        assert grad is not None
        assert np.all(np.asarray(grad) != 0)


@pytest.mark.parametrize(
    "shapes, match",
    [
        ([(None, 4)], "at least 2 tensors. Received 1"),
        (
            [(None, 4), (None, 5)],
            r"same known width d. Received shapes: \[\(None, 4\), \(None, 5\)\]",
        ),
        ((None, 4), "list of K >= 2 tensors"),
        ([(None, 2, 4), (None, 2, 4)], r"Received shapes: \[\(None, 2, 4\)"),
    ],
)
def test_bad_inputs(shapes, match):
    with pytest.raises(ValueError, match=match):
        CrossStitch().build(shapes)


BAD_ARGUMENTS = [
    ({"self_weight": 1.5}, "Received: self_weight=1.5"),
    ({"self_weight": -0.1}, "Received: self_weight=-0.1"),
    ({"self_weight": "high"}, "Received: self_weight='high'"),
    ({"per_channel": "yes"}, "Received: per_channel='yes'"),
]


def test_bad_arguments():
    # one test item for all cases: each item costs a Keras session teardown
    for kwargs, match in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            CrossStitch(**kwargs)
