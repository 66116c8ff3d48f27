"""How far an embedding row moves under dense Adam and under LazyAdam, by how often it is looked up.

One table of `--draws` rows per lookup rate p; at each of `--steps` steps every row is
looked up with probability p and then gets the gradient 1 + sd * N(0, 1) (a row whose
loss keeps pulling it one way, with noise). The same lookups and gradients go to Keras'
dense `Adam`, to `LazyAdam(row_momentum="per_lookup")` (a row's moments advance only on
its own lookups, the usual lazy Adam) and to `LazyAdam()` (the default, "per_step").
A fourth column is a numpy reference of lazy Adam with per-row bias correction (the
row's own lookup count in place of the global step), which mtlrec does not implement:
it shows that this correction moves rare rows even less. Printed: the mean distance
travelled, in units of the learning rate, and its ratio to dense Adam's.

The default 586 steps are 2 epochs of a 300,000-row day at batch 1,024; a user id of
`benchmarks/quality_vs_peers.py` is in about 5% of the batches, an item id in about 9%.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/sparse_row_displacement.py
"""

import argparse

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import keras
import numpy as np
import tensorflow as tf

from mtlrec.optimizers import LazyAdam

LR = 0.001


def per_row_bias_corrected(touch, grads, beta_1=0.9, beta_2=0.999, eps=1e-7):
    """Distance each row moves under lazy Adam whose bias correction uses the row's own lookup count."""
    m = np.zeros(touch.shape[1])
    v = np.zeros_like(m)
    count = np.zeros_like(m)
    moved = np.zeros_like(m)
    for seen, g in zip(touch, grads):
        count += seen
        m = np.where(seen, beta_1 * m + (1 - beta_1) * g, m)
        v = np.where(seen, beta_2 * v + (1 - beta_2) * g * g, v)
        c = np.maximum(count, 1)
        step = LR * np.sqrt(1 - beta_2**c) / (1 - beta_1**c) * m / (np.sqrt(v) + eps)
        moved += np.where(seen, step, 0.0)
    return moved


def distances(optimizer, touch, grads):
    table = keras.Variable(np.zeros((touch.shape[1], 1), "float32"), name="embeddings")
    optimizer.build([table])
    rows = tf.constant(touch.shape[1], tf.int64)
    for seen, g in zip(touch, grads):
        ids = np.flatnonzero(seen)
        values = tf.constant(g[ids, None], tf.float32)
        optimizer.apply_gradients([(tf.IndexedSlices(values, tf.constant(ids, tf.int64),
                                                     tf.stack([rows, 1])), table)])
    return -table.numpy()[:, 0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=586)
    ap.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.2, 0.05, 0.01, 0.003])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 3.0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    header = ["gradient sd", "lookup rate p", "lookups", "dense Adam", "LazyAdam per_step (default)",
              "LazyAdam per_lookup", "per-row bias correction (numpy)"]
    rows = []
    for sd in args.noise:
        rates = np.repeat(args.rates, args.draws)
        touch = rng.random((args.steps, rates.size)) < rates
        grads = 1.0 + sd * rng.standard_normal(touch.shape)
        dense_grads = [np.where(seen, g, 0.0) for seen, g in zip(touch, grads)]
        moved = {
            "dense": distances(keras.optimizers.Adam(LR), np.ones_like(touch), dense_grads),
            "step": distances(LazyAdam(LR), touch, grads),
            "lookup": distances(LazyAdam(LR, row_momentum="per_lookup"), touch, grads),
            "row": per_row_bias_corrected(touch, grads),
        }
        for i, p in enumerate(args.rates):
            cols = slice(i * args.draws, (i + 1) * args.draws)
            dense = moved["dense"][cols].mean()
            cells = [f"{moved[k][cols].mean() / LR:.1f} ({moved[k][cols].mean() / dense:.2f})"
                     for k in ("step", "lookup", "row")]
            rows.append([f"{sd:g}", f"{p:g}", f"{touch[:, cols].sum(0).mean():.1f}",
                         f"{dense / LR:.1f}", *cells])
    pc.print_report(f"{args.steps} steps, lr {LR}, {args.draws} rows per rate; distance moved / lr "
                    "(ratio to dense Adam)", header, rows)


if __name__ == "__main__":
    main()
