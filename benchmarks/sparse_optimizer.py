"""Training steps per second with a lazy (row-sparse) optimizer vs Keras' own.

The model is one embedding lookup (a `vocab x dim` table) and a dense layer,
trained with binary cross-entropy in a `tf.function` step; every run gets a
fresh model and the same id batches. Prints a table with each optimizer's speed
relative to the first dense one listed (Keras `Adam` by default), for two ways
of looking the rows up:

- `gather`: `tf.gather` on the table's `tf.Variable` (a ResourceGather op that
  reads only the looked-up rows);
- `keras`: `keras.layers.Embedding` as shipped, whose `ops.take` first reads the
  whole table as a dense tensor. Once a variable has had a sparse update,
  TensorFlow copies it on every dense read (copy-on-read mode), so with this
  lookup a lazy optimizer still pays a full-table copy per step.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/sparse_optimizer.py
"""

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlrec.optimizers import make_optimizer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_throughput import cpu_name  # noqa: E402  (one machine line for all benchmarks)

LABELS = {"lazy_adam": "mtlrec LazyAdam", "adam": "keras Adam",
          "lazy_adagrad": "mtlrec LazyAdagrad", "adagrad": "keras Adagrad"}


class GatherEmbedding(keras.layers.Embedding):
    """`keras.layers.Embedding` that reads only the looked-up rows."""

    def call(self, inputs):
        return tf.gather(self.embeddings.value, inputs)


def build_model(vocab, dim, seed, lookup):
    ids = keras.Input((), dtype="int64", name="ids")
    layer = GatherEmbedding if lookup == "gather" else keras.layers.Embedding
    x = layer(
        vocab, dim, embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed)
    )(ids)
    out = keras.layers.Dense(1, activation="sigmoid",
                             kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    return keras.Model(ids, out)


def time_optimizer(name, lookup, args, batches):
    model = build_model(args.vocab, args.dim, args.seed, lookup)
    optimizer = make_optimizer({"name": name, "learning_rate": args.learning_rate})
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.BinaryCrossentropy()

    @tf.function
    def train_step(ids, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(ids, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for ids, labels in batches[: args.warmup]:
        train_step(ids, labels)
    # At least `steps` steps and `min_seconds` seconds (cycling the batches),
    # so fast runs are not timed over a few milliseconds.
    timed = batches[args.warmup:]
    steps, start = 0, time.perf_counter()
    while steps < args.steps or time.perf_counter() - start < args.min_seconds:
        loss = train_step(*timed[steps % len(timed)])
        steps += 1
    float(loss)  # wait for the last step
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per run")
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help="time each run for at least this long")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (tracing) first")
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--optimizers", default="lazy_adam,adam",
                        help="comma-separated make_optimizer names")
    parser.add_argument("--lookups", default="gather,keras",
                        help="comma-separated: gather (tf.gather on the variable), "
                             "keras (keras.layers.Embedding)")
    parser.add_argument("--tiny-vocab", type=int, default=1000,
                        help="also time each lazy optimizer (gather lookup) on a table this "
                             "small, to show the step cost does not grow with the table (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    batches = [
        (tf.constant(rng.integers(0, args.vocab, args.batch_size), dtype="int64"),
         tf.constant(rng.integers(0, 2, (args.batch_size, 1)), dtype="float32"))
        for _ in range(args.warmup + args.steps)
    ]
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    lookups = [n.strip() for n in args.lookups.split(",") if n.strip()]
    results = {(lookup, name): time_optimizer(name, lookup, args, batches)
               for lookup in lookups for name in names}
    tiny = {}
    if args.tiny_vocab:
        tiny_args = argparse.Namespace(**{**vars(args), "vocab": args.tiny_vocab})
        tiny_batches = [(ids % args.tiny_vocab, labels) for ids, labels in batches]
        tiny = {name: time_optimizer(name, "gather", tiny_args, tiny_batches)
                for name in names if name.startswith("lazy_")}
    dense = [n for n in names if not n.startswith("lazy_")]
    base = dense[0] if dense else names[0]

    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs | Python {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"model: Embedding({args.vocab:,} x {args.dim}) -> Dense(1); batch {args.batch_size}; "
          f"each run timed over >= {args.steps} steps and >= {args.min_seconds:g} s "
          f"after {args.warmup} warm-up steps")
    print()
    print(f"| {'lookup':<6} | {'optimizer':<20} | {'steps/s':>8} | {'examples/s':>11} "
          f"| {'vs ' + base + ', same lookup':>24} |")
    print(f"|{'-' * 8}|{'-' * 22}|{'-' * 9}:|{'-' * 12}:|{'-' * 25}:|")
    for lookup in lookups:
        for name in names:
            rate = results[lookup, name]
            print(f"| {lookup:<6} | {LABELS.get(name, name):<20} | {rate:>8.1f} "
                  f"| {rate * args.batch_size:>11,.0f} "
                  f"| {rate / results[lookup, base]:>23.1f}x |")
    for name, rate in tiny.items():
        if "gather" in lookups:
            print(f"\n{LABELS.get(name, name)}, gather lookup, {args.tiny_vocab:,}-row table: "
                  f"{rate:.1f} steps/s; the {args.vocab:,}-row table runs at "
                  f"{results['gather', name] / rate:.2f} of that")


if __name__ == "__main__":
    main()
