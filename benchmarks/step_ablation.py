"""What the expert models' step can still gain: the Trainer's step against the same step with
a part of its work removed, in one run.

For MMoE and PLE of `train_throughput.py`'s large-vocabulary configuration (same seed, same
batches), each variant is the Trainer's own `tf.function` step with one part replaced by a
cheaper stand-in (the model no longer learns the same thing; only the time counts):

- `step`: the step as it ships;
- `sgd_dense`: the dense optimizer SGD instead of Adam (what Adam's updates cost at most);
- `sgd_embedding`: the tables' optimizer SGD instead of lazy Adam (the same, for the 20 tables);
- `no_mixing`: every gate's mixture `sum_i g_i f_i` replaced by the first expert's output
  (what stacking and mixing the experts cost at most);
- `all_three`: the three at once.

What is left in every variant is the experts' and towers' matmuls, their bias and ReLU
gradients and the embedding: the part no variant removes bounds what a faster step could be.
The variants are timed in turns (round r of every variant before round r + 1); each reports
its median CPU-ms and wall-ms per step and the ratio to `step`.

TensorFlow's thread pools are those `mtlrec train` would pick here (`training.*_op_threads:
auto`), set before anything runs.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/step_ablation.py
"""

import argparse
import os
import statistics
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mtlrec.training.thread_pools import apply_thread_pools, thread_pools  # noqa: E402

apply_thread_pools(SimpleNamespace(intra_op_threads="auto", inter_op_threads="auto"))

from keras import ops  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as tt  # noqa: E402

import mtlrec.layers._core_utils as core_utils  # noqa: E402

VARIANTS = ("step", "sgd_dense", "sgd_embedding", "no_mixing", "all_three")
MIX_EXPERTS = core_utils.mix_experts


def first_expert(weights, experts, return_weights):
    """The stand-in mixture: expert 0's output (plus a term that keeps the gate in the graph)."""
    mixed = experts[:, 0, :] + ops.mean(weights)
    return (mixed, weights) if return_weights else mixed


def build_step(model, variant, args, batches):
    """A callable running the Trainer's step of `variant` on batch i, traced here."""
    every = variant == "all_three"
    dense = {"name": "sgd" if every or variant == "sgd_dense" else "adam", "learning_rate": 0.001}
    embedding = {"name": "sgd" if every or variant == "sgd_embedding" else "lazy_adam", "learning_rate": 0.001}
    core_utils.mix_experts = first_expert if every or variant == "no_mixing" else MIX_EXPERTS
    try:
        run, _, _ = tt.mtlrec_runner(model, "large", embedding, args, batches, dense_optimizer=dense)
        for i in range(args.warmup):  # traces here, while the stand-in is in place
            run(i)
    finally:
        core_utils.mix_experts = MIX_EXPERTS
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mmoe,ple")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--tiny-vocab", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--num-batches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    # a pass over every batch first: the tables' rows (and their slots) it touches are paged in
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "step" not in variants:
        parser.error(f"--variants: expected 'step' and any of {', '.join(VARIANTS)}, got {args.variants}")
    batches = tt.make_batches(args)
    pools = thread_pools(SimpleNamespace(intra_op_threads="auto", inter_op_threads="auto"))
    print(f"cores {os.cpu_count()}, thread pools {pools} (0: TensorFlow's default), load average "
          f"{os.getloadavg()[0]:.2f}")
    print("| model | variant | CPU-ms / step | vs step | wall-ms / step | vs step |")
    print("|---|---|---:|---:|---:|---:|")
    for model in args.models.split(","):
        steps = {v: build_step(model, v, args, batches) for v in variants}
        times = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant, run in steps.items():
                cpu, wall = time.process_time(), time.perf_counter()
                for i in range(args.steps):
                    run(i).numpy()
                times[variant].append(((time.process_time() - cpu) / args.steps * 1e3,
                                       (time.perf_counter() - wall) / args.steps * 1e3))
        base = [statistics.median(t[k] for t in times["step"]) for k in (0, 1)]
        for variant in variants:
            cpu, wall = (statistics.median(t[k] for t in times[variant]) for k in (0, 1))
            print(f"| {model} | {variant} | {cpu:.1f} | {base[0] / cpu:.2f}x | {wall:.1f} | {base[1] / wall:.2f}x |",
                  flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
