"""The expert models' training step: experts one by one vs stacked, in one run.

For MMoE and PLE on `train_throughput.py`'s large-vocabulary configuration (same
batches, the Trainer's own `tf.function` step with lazy Adam on the tables), times
each variant of the mixture layers' expert computation:

- `one_by_one`: every expert's `Dense` chain called on its own and the outputs
  stacked (the mixture layers' computation before the stacked experts);
- `stacked`: `stacked_expert_outputs`, all experts of a level in one matmul per layer
  (the default).

Optional variants (`--variants`): `stacked+xla` (`training.jit_compile: true`) and
`stacked+bf16` (`training.mixed_precision: bfloat16`).

Each variant is built and warmed up, then the variants are timed in turns (round r
of every variant before round r + 1), and each reports its median examples/s (wall)
and examples per CPU-second; `vs one_by_one` is the ratio of medians of this run.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/expert_step.py
"""

import argparse
import contextlib
import gc
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as tt  # noqa: E402

from mtlrec.layers.experts import cgc, expert_stack, mixture_of_experts  # noqa: E402

VARIANTS = {
    "one_by_one": {},
    "stacked": {},
    "stacked+xla": {"jit_compile": True},
    "stacked+bf16": {"mixed_precision": "bfloat16"},
}


@contextlib.contextmanager
def experts_one_by_one():
    """The mixture layers call every expert on its own while this is open."""
    saved = (mixture_of_experts.stacked_expert_outputs, cgc.stacked_expert_outputs)
    mixture_of_experts.stacked_expert_outputs = expert_stack.expert_outputs_one_by_one
    cgc.stacked_expert_outputs = expert_stack.expert_outputs_one_by_one
    try:
        yield
    finally:
        mixture_of_experts.stacked_expert_outputs, cgc.stacked_expert_outputs = saved


def runner(model, variant, args, batches):
    training = VARIANTS[variant]
    patch = experts_one_by_one() if variant == "one_by_one" else contextlib.nullcontext()
    with patch:  # the step is traced inside: the patch decides what the graph computes
        run, _, trainer = tt.mtlrec_runner(model, "large", {"name": "lazy_adam"}, args, batches,
                                           training=training)
        i, start = 0, time.perf_counter()
        while i < args.warmup or time.perf_counter() - start < args.warmup_seconds:
            np.asarray(run(i))
            i += 1
    return run, trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mmoe,ple")
    parser.add_argument("--variants", default="one_by_one,stacked")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--num-batches", type=int, default=8)
    parser.add_argument("--tiny-vocab", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"--variants: unknown {v!r} (known: {', '.join(VARIANTS)})")
    batches = tt.make_batches(args)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    rows = []
    for model in [m for m in args.models.split(",") if m]:
        keras.backend.clear_session()
        gc.collect()
        runs = {v: runner(model, v, args, batches) for v in variants}
        rates = {}
        for _ in range(args.rounds):
            for v, (run, _trainer) in runs.items():
                rates.setdefault(v, []).append(tt.timed(run, args))
        for v in variants:
            wall = statistics.median(r[0] for r in rates[v])
            cpu = statistics.median(r[1] for r in rates[v])
            rows.append((model, v, wall, cpu))
        del runs
    print(f"machine: {tt.cpu_name()}, {os.cpu_count()} CPUs, load average {load:.2f} before / "
          f"{os.getloadavg()[0]:.2f} after | TensorFlow {tf.__version__}, Keras {keras.__version__}"
          f" | batch {args.batch_size}, {args.rounds} rounds, total "
          f"{time.perf_counter() - started:.0f} s")
    print()
    print("| model | variant | examples/s | vs one_by_one | examples per CPU-s | vs one_by_one |")
    print("|-------|---------|-----------:|--------------:|-------------------:|--------------:|")
    base = {(m, 0): w for m, v, w, c in rows if v == "one_by_one"}
    base.update({(m, 1): c for m, v, w, c in rows if v == "one_by_one"})
    for model, v, wall, cpu in rows:
        ratio_w = f"{wall / base[model, 0]:.2f}x" if (model, 0) in base else ""
        ratio_c = f"{cpu / base[model, 1]:.2f}x" if (model, 1) in base else ""
        print(f"| {model} | {v} | {wall:,.0f} | {ratio_w} | {cpu:,.0f} | {ratio_c} |")


if __name__ == "__main__":
    main()
