"""Where an mtlrec training step spends its CPU time, large vs tiny vocabularies.

For each model of `train_throughput.py` (same configuration and batches), four
`tf.function`s are timed by process CPU time, interleaved (round r of every
stage and vocabulary before round r + 1), median over `--rounds` rounds of
`--steps` calls:

- `embedding`: `FeatureEmbedding` forward only (hashing + row gathers);
- `forward`: the whole model forward;
- `forward+backward`: forward, task losses and the gradients of every trained
  variable (summed so none is pruned), no update;
- `step`: the Trainer's own step (the above plus both optimizers' updates).

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/step_profile.py
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as tt  # noqa: E402

from mtlrec.losses import task_losses  # noqa: E402

STAGES = ("embedding", "forward", "forward+backward", "step")


def stage_functions(model, kind, args, batches):
    run, _, trainer = tt.mtlrec_runner(model, kind, {"name": "lazy_adam"}, args, batches)
    names = list(trainer.model.input.keys())
    data = [tt.as_tensors(b, names) for b in batches]
    net = trainer.model
    variables = trainer.embedding_variables + trainer.dense_variables

    @tf.function
    def embedding(features):
        return net.feature_embedding(features)["dense"]

    @tf.function
    def forward(features):
        return net(features, training=True)["ctr"]

    @tf.function
    def gradients(features, labels):
        with tf.GradientTape() as tape:
            loss = tf.add_n(list(task_losses(trainer.tasks, labels, net(features, training=True)).values()))
        grads = tape.gradient(loss, variables)
        return tf.add_n([tf.reduce_sum(g.values if isinstance(g, tf.IndexedSlices) else g)
                         for g in grads if g is not None])

    n = len(data)
    return trainer, {
        "embedding": lambda i: embedding(data[i % n][0]),
        "forward": lambda i: forward(data[i % n][0]),
        "forward+backward": lambda i: gradients(*data[i % n]),
        "step": run,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(tt.MODELS))
    parser.add_argument("--tiny-vocab", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--num-batches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    batches = tt.make_batches(args)
    print("| model | vocab | " + " | ".join(f"{s} CPU-ms" for s in STAGES) + " |")
    print("|-------|-------|" + "|".join("-" * (len(s) + 9) + ":" for s in STAGES) + "|")
    for model in [m for m in args.models.split(",") if m]:
        funcs, keep = {}, []
        for kind in ("large", "tiny"):
            trainer, fns = stage_functions(model, kind, args, batches)
            keep.append(trainer)
            for stage, fn in fns.items():
                for i in range(args.warmup):
                    np.asarray(fn(i))
                funcs[kind, stage] = fn
        times = {}
        for _ in range(args.rounds):
            for key, fn in funcs.items():
                cpu = time.process_time()
                for i in range(args.steps):
                    out = fn(i)
                np.asarray(out)
                times.setdefault(key, []).append((time.process_time() - cpu) / args.steps * 1e3)
        for kind in ("large", "tiny"):
            cells = [f"{statistics.median(times[kind, s]):.1f}" for s in STAGES]
            print(f"| {model} | {kind} | " + " | ".join(cells) + " |", flush=True)
        del keep


if __name__ == "__main__":
    main()
