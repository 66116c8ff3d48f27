"""Save one small functional model per backend-neutral layer as `.keras`, and load such files
back, on whichever Keras backend this process runs (KERAS_BACKEND).

    python tests/layers/keras_files_across_backends.py [--load DIR ...] [--save DIR]

`--save DIR` writes DIR/<case>.keras and DIR/<case>.npz (the inputs and this backend's
predictions); `--load DIR` loads every file of DIR with safe_mode=True, predicts the same inputs
and prints one JSON line: {"<DIR's name> -> <this backend>: <case>": the largest absolute
difference to the saving backend's predictions}.
tests/layers/test_other_backends.py runs it once per backend."""

import argparse
import json
import sys
from pathlib import Path

import keras
import numpy as np

from mtlrec.layers import (
    CGC,
    MLP,
    AttentionPooling,
    CrossNetwork,
    CrossStitch,
    DotInteraction,
    DSelectKGate,
    Expert,
    FMInteraction,
    Gate,
    InformationTransfer,
    MixtureOfExperts,
    PropertyGatedLSTM,
)

B, T = 5, 4
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]], bool)


def _floats(rng, *shape):
    return rng.normal(size=(B, *shape)).astype("float32")


def _dense(units, seed):
    return keras.layers.Dense(units, kernel_initializer=keras.initializers.GlorotUniform(seed))


def _mlp(rng):
    x = keras.Input((6,))
    return keras.Model(x, MLP([5, 3], batch_norm=True, seed=1)(x)), [_floats(rng, 6)]


def _expert(rng):
    x = keras.Input((6,))
    return keras.Model(x, Expert([4], seed=2)(x)), [_floats(rng, 6)]


def _gate(rng):
    x, e = keras.Input((6,)), keras.Input((3, 4))
    mixed, weights = Gate(3, return_weights=True, seed=3)([x, e])
    return keras.Model([x, e], [mixed, weights]), [_floats(rng, 6), _floats(rng, 3, 4)]


def _dselect_k_gate(rng):
    x, e = keras.Input((6,)), keras.Input((4, 3))
    mixed, weights = DSelectKGate(4, k=2, return_weights=True, seed=4)([x, e])
    return keras.Model([x, e], [mixed, weights]), [_floats(rng, 6), _floats(rng, 4, 3)]


def _mixture_of_experts(rng):
    x = keras.Input((6,))
    outputs = MixtureOfExperts(3, [4], 2, seed=5)(x)
    return keras.Model(x, outputs), [_floats(rng, 6)]


def _cgc(rng):
    x = keras.Input((6,))
    outputs = CGC(2, 1, 2, [4], seed=6)(x)
    outputs = CGC(2, 1, 2, [3], is_last=True, seed=7)(outputs)
    return keras.Model(x, outputs), [_floats(rng, 6)]


def _cross_stitch(rng):
    a, b = keras.Input((4,)), keras.Input((4,))
    outputs = CrossStitch(per_channel=True)([_dense(4, seed=8)(a), b])
    return keras.Model([a, b], outputs), [_floats(rng, 4), _floats(rng, 4)]


def _information_transfer(rng):
    prev, own = keras.Input((3,)), keras.Input((4,))
    return keras.Model([prev, own], InformationTransfer(seed=9)([prev, own])), [
        _floats(rng, 3),
        _floats(rng, 4),
    ]


def _property_gated_lstm(rng):
    items, props, mask = keras.Input((T, 3)), keras.Input((T, 2)), keras.Input((T,), dtype="bool")
    out = PropertyGatedLSTM(4, return_sequences=True, seed=10)([items, props], mask=mask)
    return keras.Model([items, props, mask], out), [_floats(rng, T, 3), _floats(rng, T, 2), MASK]


def _attention_pooling(rng):
    hidden, query = keras.Input((T, 4)), keras.Input((3,))
    props, mask = keras.Input((T, 2)), keras.Input((T,), dtype="bool")
    pooled, weights = AttentionPooling(5, return_weights=True, seed=11)(
        [hidden, query, props], mask=mask
    )
    inputs = [_floats(rng, T, 4), _floats(rng, 3), _floats(rng, T, 2), MASK]
    return keras.Model([hidden, query, props, mask], [pooled, weights]), inputs


def _fm_interaction(rng):
    fields = keras.Input((4, 3))
    out = keras.layers.Concatenate()([FMInteraction()(fields), FMInteraction(reduce_sum=True)(fields)])
    return keras.Model(fields, out), [_floats(rng, 4, 3)]


def _dot_interaction(rng):
    fields = keras.Input((4, 3))
    return keras.Model(fields, DotInteraction()(_dense(3, seed=12)(fields))), [
        _floats(rng, 4, 3)
    ]


def _cross_network(rng):
    x = keras.Input((5,))
    out = keras.layers.Concatenate()(
        [CrossNetwork(2, seed=13)(x), CrossNetwork(2, low_rank=2, seed=14)(x)]
    )
    return keras.Model(x, out), [_floats(rng, 5)]


CASES = {
    "mlp": _mlp,
    "expert": _expert,
    "gate": _gate,
    "dselect_k_gate": _dselect_k_gate,
    "mixture_of_experts": _mixture_of_experts,
    "cgc": _cgc,
    "cross_stitch": _cross_stitch,
    "information_transfer": _information_transfer,
    "property_gated_lstm": _property_gated_lstm,
    "attention_pooling": _attention_pooling,
    "fm_interaction": _fm_interaction,
    "dot_interaction": _dot_interaction,
    "cross_network": _cross_network,
}


def _predict(model, inputs):
    outputs = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0, batch_size=B)
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def save(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for i, (name, build) in enumerate(CASES.items()):
        keras.utils.set_random_seed(100 + i)
        model, inputs = build(np.random.default_rng(i))
        outputs = _predict(model, inputs)
        model.save(directory / f"{name}.keras")
        arrays = {f"input_{j}": x for j, x in enumerate(inputs)}
        arrays.update({f"output_{j}": y for j, y in enumerate(outputs)})
        np.savez(directory / f"{name}.npz", **arrays)


def load(directory):
    differences = {}
    for name in CASES:
        stored = np.load(directory / f"{name}.npz")
        inputs = [stored[f"input_{j}"] for j in range(sum(k.startswith("input_") for k in stored))]
        expected = [stored[f"output_{j}"] for j in range(sum(k.startswith("output_") for k in stored))]
        model = keras.saving.load_model(directory / f"{name}.keras", safe_mode=True)
        outputs = _predict(model, inputs)
        if [o.shape for o in outputs] != [e.shape for e in expected]:
            raise AssertionError(f"{directory / name}: shapes {[o.shape for o in outputs]} != {[e.shape for e in expected]}")
        differences[f"{directory.name} -> {keras.backend.backend()}: {name}"] = max(
            float(np.abs(o.astype("float64") - e).max()) for o, e in zip(outputs, expected)
        )
    return differences


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", type=Path, action="append", default=[])
    parser.add_argument("--save", type=Path)
    args = parser.parse_args(argv)
    differences = {}
    for directory in args.load:
        differences.update(load(directory))
    if args.save:
        save(args.save)
    print(json.dumps({"backend": keras.backend.backend(), "differences": differences}))


if __name__ == "__main__":
    sys.exit(main())
