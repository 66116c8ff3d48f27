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

`--gaps` (a second table) is the multi-day case: ids that come back after thousands of
steps. One row gets the gradient 1.0 every `gap` steps, `--lookups` times from step
`--first-step`; its distance is read where the next lookup would be (`lookups * gap`
steps on). Columns: Keras' dense `Adam` (every step run, the row's gradient 0 between
lookups), `LazyAdam()` (per_step), and two numpy references: the per_step rule before
`v` decayed over the absent steps (v advanced one step per lookup, as in mtlrec up to
this change), and per_step with each future step's own bias correction in place of the
lookup step's (the alternative the LazyAdam docstring explains not taking).

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/sparse_row_displacement.py
    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/sparse_row_displacement.py --gaps 1 10 100 300 1000 10000
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


def _per_step_reference(steps, g, beta_1=0.9, beta_2=0.999, eps=1e-7, decay=False, exact_bias=False):
    """Distance of a row under a numpy per_step rule, gradient `g` at global steps `steps`:
    `decay`: v decays over the absent steps (mtlrec now) or not (before); `exact_bias`:
    the sum over the gradient's future of each step's bias correction (not taken)."""
    r = beta_1 / np.sqrt(beta_2)
    k = np.arange(int(np.ceil(np.log(1e-12) / np.log(r))))
    v = w = 0.0
    last = None
    for t in steps:
        if decay and last is not None:
            v *= beta_2 ** (t - last - 1)
        v += (1 - beta_2) * (g * g - v)
        last = t
        if exact_bias:
            future = np.sum(r**k * np.sqrt(1 - beta_2 ** (t + k)) / (1 - beta_1 ** (t + k)))
        else:
            future = np.sqrt(1 - beta_2**t) / (1 - r)
        w -= LR * (1 - beta_1) * future * g / (np.sqrt(v) + eps)
    return -w


def gap_distances(gap, lookups, first_step):
    """(dense Adam, LazyAdam) distances of row 0 of a 4-row table with gradient 1.0 at steps
    `first_step + i * gap`, read at step `first_step + lookups * gap - 1`."""
    dense_table = keras.Variable(np.zeros((4, 1), "float32"), name="embeddings")
    lazy_table = keras.Variable(np.zeros((4, 1), "float32"), name="embeddings")
    dense, lazy = keras.optimizers.Adam(LR), LazyAdam(LR)
    dense.build([dense_table])
    lazy.build([lazy_table])
    dense.iterations.assign(first_step - 1)  # the row's moments are zero before: nothing to run
    one_hot = tf.constant([[1.0], [0.0], [0.0], [0.0]])
    zeros = tf.zeros((4, 1))

    @tf.function
    def dense_steps(first, absent):
        dense.apply_gradients([(first, dense_table)])
        for _ in tf.range(absent):
            dense.apply_gradients([(zeros, dense_table)])

    row = tf.IndexedSlices(tf.constant([[1.0]]), tf.constant([0], tf.int64), tf.constant([4, 1], tf.int64))
    for i in range(lookups):
        dense_steps(one_hot, tf.constant(gap - 1))
        lazy.iterations.assign(first_step - 1 + i * gap)
        lazy.apply_gradients([(row, lazy_table)])
    assert int(dense.iterations.numpy()) == first_step - 1 + lookups * gap
    return -float(dense_table.numpy()[0, 0]), -float(lazy_table.numpy()[0, 0])


def gaps_report(args):
    header = ["gap (steps)", "first lookup at step", "lookups", "dense Adam", "LazyAdam per_step (now)",
              "per_step before: v not decayed (numpy)", "per_step, each step's bias correction (numpy)"]
    rows = []
    for first_step in args.first_step:
        for gap in args.gaps:
            dense, lazy = gap_distances(gap, args.lookups, first_step)
            steps = [first_step + i * gap for i in range(args.lookups)]
            before = _per_step_reference(steps, 1.0)
            exact = _per_step_reference(steps, 1.0, decay=True, exact_bias=True)
            rows.append([f"{gap:,}", f"{first_step:,}", str(args.lookups), f"{dense / LR:.1f}",
                         *(f"{x / LR:.1f} ({x / dense:.2f})" for x in (lazy, before, exact))])
    pc.print_report(f"row 0 of a 4-row table, gradient 1.0 every gap steps, lr {LR}; distance moved / lr "
                    "(ratio to dense Adam), read where the next lookup would be", header, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=586)
    ap.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.2, 0.05, 0.01, 0.003])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 3.0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gaps", type=int, nargs="+", help="the multi-day table instead: these gaps")
    ap.add_argument("--lookups", type=int, default=25, help="lookups per row (--gaps)")
    ap.add_argument("--first-step", type=int, nargs="+", default=[1],
                    help="global step of each row's first lookup (--gaps)")
    args = ap.parse_args()
    if args.gaps:
        return gaps_report(args)

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
