"""The expert models' training step: experts one by one vs stacked, in one run.

For MMoE and PLE on `train_throughput.py`'s large-vocabulary configuration (same
batches, the Trainer's own `tf.function` step with lazy Adam on the tables), times
each variant of the mixture layers' expert computation:

- `one_by_one`: every expert's `Dense` chain called on its own and the outputs
  stacked (what `MixtureOfExperts` and `CGC` compute);
- `stacked`: `stacked_expert_outputs` below, all experts of a level in one matmul per
  layer over the same weights (the layers' `call` replaced while the step is traced).

Optional variants (`--variants`): `stacked+xla` (`training.jit_compile: true`) and
`stacked+bf16` (`training.mixed_precision: bfloat16`).

Each variant's model is built with the same seed (the same weights); its forward on the
first batch is checked against `one_by_one`'s before any timing. Each is warmed up, then the variants are timed in turns (round r
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

from keras import ops  # noqa: E402

from mtlrec.layers import CGC, MixtureOfExperts  # noqa: E402

VARIANTS = {
    "one_by_one": {},
    "stacked": {},
    "stacked+xla": {"jit_compile": True},
    "stacked+bf16": {"mixed_precision": "bfloat16"},
}


def stacked_expert_outputs(experts, inputs, training=None):
    """`(B, E, h)`: E `Expert` layers built alike, expert i on `inputs[i]` (or all on one
    tensor), by batched matmuls over their own weights: with one input for all,
    h_1 = x [W_1,1 | .. | W_E,1] is one (B, d) x (d, E h) matmul; with an input per expert,
    and for deeper layers, one (E, B, i) x (E, i, o) batched matmul. Batch norm and dropout
    run per expert on its slice (their own statistics and seeds)."""
    shared = not isinstance(inputs, (list, tuple))
    num = len(experts)
    mlps = [e.mlp for e in experts]
    x, axis = None, 1  # where the experts are in x: 1 for (B, E, h), 0 for (E, B, h)
    for layer, act in enumerate(mlps[0]._activations):
        denses = [m.dense_layers[layer] for m in mlps]
        if layer == 0 and shared:
            kernel = ops.concatenate([d.kernel.value for d in denses], axis=1)
            x = ops.reshape(ops.matmul(inputs, kernel), (-1, num, denses[0].units))
        else:
            if layer == 0:
                x = ops.stack(list(inputs), axis=0)
            elif axis == 1:
                x = ops.transpose(x, (1, 0, 2))
            axis = 0
            x = ops.matmul(x, ops.stack([d.kernel.value for d in denses], axis=0))
        if denses[0].use_bias:
            x = x + ops.expand_dims(ops.stack([d.bias.value for d in denses], axis=0), 1 - axis)
        x = _per_expert(x, axis, [m.norm_layers[layer] for m in mlps], training)
        x = _per_expert(act(x), axis, [m.dropout_layers[layer] for m in mlps], training)
    return ops.transpose(x, (1, 0, 2)) if axis == 0 else x


def _per_expert(x, axis, layers, training):
    """Each expert's own batch norm or dropout layer on its slice of x (none: x)."""
    if layers[0] is None:
        return x
    parts = [f(x[:, i] if axis == 1 else x[i], training=training) for i, f in enumerate(layers)]
    return ops.stack(parts, axis=axis)


def _mixture_call(self, inputs, training=None):
    experts = stacked_expert_outputs(self.experts, inputs, training)
    outputs, weights = [], []
    for gate in self.gates:
        mixed, w = gate([inputs, experts])
        outputs.append(mixed)
        weights.append(w)
    return (outputs, weights) if self.return_gate_weights else outputs


def _cgc_call(self, inputs, training=None):
    if isinstance(inputs, (list, tuple)):
        task_inputs, shared_input = list(inputs[:-1]), inputs[-1]
        m_t = self.num_task_experts
        per_expert = [x for x in task_inputs for _ in range(m_t)] + [shared_input] * self.num_shared_experts
    else:
        task_inputs, shared_input = [inputs] * self.num_tasks, inputs
        per_expert = inputs
    m_t, n = self.num_task_experts, self.num_tasks
    stacked = stacked_expert_outputs(list(self.task_experts) + list(self.shared_experts), per_expert, training)
    shared_out = stacked[:, n * m_t:]
    outputs, weights = [], []
    for k, (x, gate) in enumerate(zip(task_inputs, self.task_gates)):
        own = stacked[:, k * m_t:(k + 1) * m_t]
        mixed, w = gate([x, ops.concatenate([own, shared_out], axis=1) if m_t else shared_out])
        outputs.append(mixed)
        weights.append(w)
    if self.shared_gate is not None:
        outputs.append(self.shared_gate([shared_input, stacked]))
    return (outputs, weights) if self.return_gate_weights else outputs


@contextlib.contextmanager
def experts_stacked():
    """MixtureOfExperts and CGC compute their experts stacked while this is open."""
    saved = (MixtureOfExperts.call, CGC.call)
    MixtureOfExperts.call, CGC.call = _mixture_call, _cgc_call
    try:
        yield
    finally:
        MixtureOfExperts.call, CGC.call = saved


def runner(model, variant, args, batches):
    """(step callable, trainer, the model's ctr output on the first batch)."""
    training = VARIANTS[variant]
    patch = contextlib.nullcontext() if variant == "one_by_one" else experts_stacked()
    with patch:  # the step is traced inside: the patch decides what the graph computes
        run, _, trainer = tt.mtlrec_runner(model, "large", {"name": "lazy_adam"}, args, batches,
                                           training=training)
        names = list(trainer.model.input.keys())
        features, _ = tt.as_tensors(batches[0], names)
        first = np.asarray(trainer.model(features, training=False)["ctr"], dtype="float32")
        i, start = 0, time.perf_counter()
        while i < args.warmup or time.perf_counter() - start < args.warmup_seconds:
            np.asarray(run(i))
            i += 1
    return run, trainer, first


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
        if "one_by_one" in runs:  # the same model: same weights (seed), same outputs
            ref = runs["one_by_one"][2]
            for v, (_, _, first) in runs.items():
                tol = 2e-2 if "bf16" in v else 1e-4
                if not np.allclose(first, ref, rtol=tol, atol=tol):
                    raise SystemExit(f"{model} {v}: outputs differ from one_by_one by up to "
                                     f"{np.abs(first - ref).max():.2e}")
        rates = {}
        for _ in range(args.rounds):
            for v, (run, _trainer, _) in runs.items():
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
