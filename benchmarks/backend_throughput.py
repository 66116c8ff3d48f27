"""Training examples per second of an MMoE block on each Keras backend (TensorFlow, JAX, PyTorch).

The block: dense inputs (what the embedding hands the backbone) -> `mtlrec.layers.MixtureOfExperts`
-> one `mtlrec.layers.MLP` tower and a sigmoid unit per task, compiled with Adam and binary
cross-entropy per task and trained by `model.fit` on random data held in memory (no input
pipeline is timed). Keras picks its backend once per process, so each backend trains in a
subprocess of this script; the backends alternate over `--rounds` rounds on the same data shapes
and each reports its median. Every round: one untimed epoch (tracing and compilation), then
`--epochs` timed epochs. Both wall-clock examples/s and examples per CPU-second of the process
are reported: on a shared machine the second is the steadier one.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/backend_throughput.py
    ... --backends tensorflow,jax,torch   # PyTorch where `.[torch]` is installed

The goal: JAX within 2x of TensorFlow (jax / tensorflow >= 0.5), i.e. the layers are usable on
JAX, not only importable.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def train(args):
    import keras
    import numpy as np

    from mtlrec.layers import MLP, MixtureOfExperts

    keras.utils.set_random_seed(0)
    inputs = keras.Input((args.features,))
    towers = MixtureOfExperts(
        args.experts, [args.expert_units, args.expert_units // 2], args.tasks, seed=1
    )(inputs)
    outputs = {
        f"task_{t}": keras.layers.Dense(1, activation="sigmoid", name=f"task_{t}")(
            MLP([args.tower_units], seed=10 + t)(tower)
        )
        for t, tower in enumerate(towers)
    }
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={name: "binary_crossentropy" for name in outputs},
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.examples, args.features)).astype("float32")
    y = {name: (rng.random((args.examples, 1)) < 0.3).astype("float32") for name in outputs}

    model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)  # compile
    wall, cpu = time.perf_counter(), time.process_time()
    history = model.fit(
        x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, shuffle=False
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    examples = args.examples * args.epochs
    return {
        "backend": keras.backend.backend(),
        "examples_per_s": examples / wall,
        "examples_per_cpu_s": examples / cpu,
        "final_loss": float(history.history["loss"][-1]),
        "parameters": int(model.count_params()),
        "jit_compile": bool(model.jit_compile),
    }


def _child(backend, argv):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, __file__, "--child", *argv], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        raise SystemExit(f"{backend} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=32768)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--expert-units", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--tower-units", type=int, default=32)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train(args)))
        return
    backends = args.backends.split(",")
    runs = {b: [] for b in backends}
    for r in range(args.rounds):
        for backend in backends:
            runs[backend].append(_child(backend, _argv_for_child(args)))
            print(f"round {r + 1} {backend}: {runs[backend][-1]}", flush=True)
    print(
        f"\n{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.examples} examples x {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.features} features, MMoE {args.experts} experts [{args.expert_units}, "
        f"{args.expert_units // 2}], {args.tasks} tasks, towers [{args.tower_units}]"
    )
    print(f"{'backend':<11} {'examples/s':>11} {'per CPU-s':>10} {'vs tf (wall)':>13} {'vs tf (CPU)':>12}")
    base = None
    for backend in backends:
        wall = statistics.median(r["examples_per_s"] for r in runs[backend])
        cpu = statistics.median(r["examples_per_cpu_s"] for r in runs[backend])
        if base is None:
            base = (wall, cpu)
        print(f"{backend:<11} {wall:>11,.0f} {cpu:>10,.0f} {wall / base[0]:>13.2f} {cpu / base[1]:>12.2f}")


def _argv_for_child(args):
    keys = ["examples", "batch_size", "epochs", "features", "experts", "expert_units", "tasks", "tower_units"]
    argv = []
    for key in keys:
        argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return argv


if __name__ == "__main__":
    main()
