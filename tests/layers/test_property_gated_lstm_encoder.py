import keras
import numpy as np
import pytest

from mtlrec.layers import AttentionPooling, PropertyGatedLSTM, PropertyGatedLSTMEncoder
from mtlrec.conventions.seeding import derive_seed

B, T, DE, DP, Q = 4, 5, 3, 2, 4

MASK = np.array(
    [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool
)


def _data(rng):
    return (
        rng.normal(size=(B, T, DE)).astype("float32"),
        rng.normal(size=(B, Q)).astype("float32"),
        rng.normal(size=(B, T, DP)).astype("float32"),
    )


def test_is_dupns_lstm_then_attention_pooling(rng):
    items, query, props = _data(rng)
    encoder = PropertyGatedLSTMEncoder(units=6, attention_units=5, seed=9)
    out = np.asarray(encoder([items, query, props], mask=MASK))
    # the same two layers DUPN stacks, seeded as the encoder seeds its parts
    lstm = PropertyGatedLSTM(6, return_sequences=True, seed=derive_seed(9, "property_gated_lstm"))
    pool = AttentionPooling(5, seed=derive_seed(9, "attention_pooling"))
    expected = pool([lstm([items, props], mask=MASK), query, props], mask=MASK)
    np.testing.assert_allclose(out, np.asarray(expected), atol=1e-6)
    assert out.shape == (B, 6)
    np.testing.assert_array_equal(out[3], np.zeros(6))  # no history: zeros


def test_without_properties_is_a_plain_lstm_read_out_by_attention(rng):
    items, query, _ = _data(rng)
    encoder = PropertyGatedLSTMEncoder(units=4, attention_units=3, seed=1)
    out = np.asarray(encoder([items, query], mask=MASK))
    assert out.shape == (B, 4) and np.isfinite(out).all()
    assert tuple(encoder.lstm.property_kernel.shape) == (0, 12)
    # the same as giving properties of no width
    empty = np.zeros((B, T, 0), "float32")
    np.testing.assert_array_equal(np.asarray(encoder([items, query, empty], mask=MASK)), out)


def test_padded_steps_change_no_output(rng):
    items, query, props = _data(rng)
    encoder = PropertyGatedLSTMEncoder(units=4, attention_units=3, seed=2)
    out = np.asarray(encoder([items, query, props], mask=MASK))
    items2, props2 = items.copy(), props.copy()
    items2[~MASK] = 1e3
    props2[~MASK] = np.nan
    np.testing.assert_array_equal(np.asarray(encoder([items2, query, props2], mask=MASK)), out)


def test_same_seed_same_weights_different_seeds_different():
    shapes = [(None, T, DE), (None, Q), (None, T, DP)]
    a, b, c = (PropertyGatedLSTMEncoder(4, 3, seed=s) for s in (7, 7, 8))
    for layer in (a, b, c):
        layer.build(shapes)
    for wa, wb, wc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
        if "kernel" in wa.name:
            assert not np.array_equal(np.asarray(wa), np.asarray(wc))


@pytest.mark.parametrize("with_properties", [True, False])
def test_keras_round_trip(rng, keras_roundtrip, with_properties):
    items, query, props = _data(rng)
    e = keras.Input((T, DE))
    q = keras.Input((Q,))
    p = keras.Input((T, DP))
    m = keras.Input((T,), dtype="bool")
    encoder = PropertyGatedLSTMEncoder(units=4, attention_units=3, seed=2, name="pg_lstm")
    out = encoder([e, q, p] if with_properties else [e, q], mask=m)
    model = keras.Model([e, q, p, m], out)
    loaded = keras_roundtrip(model)
    args = [items, query, props, MASK]
    np.testing.assert_array_equal(np.asarray(loaded(args)), np.asarray(model(args)))
