"""Training throughput on whatever device is present, and the share of the step time spent
waiting for input.

Writes (once, or reuses with --data) a Parquet day of `train_throughput.py`'s
large-vocabulary kind (20 categorical features of up to 1,000,000 buckets, dim 16, about
53M embedding parameters, 5 numerics, click and conversion), then for MMoE, ESMM and PLE
trains on it the way `Trainer.train_day` does: the day read by `make_dataset` (shuffle
buffer, prefetch), distributed by the trainer's strategy, the trainer's own step, one host
read of the loss per step. Each step is split into

- input wait: the time `next()` on the dataset iterator blocks (the reader did not have
  the batch ready while the previous step ran);
- step: the step's call until its loss is on the host.

After `--warmup-steps` untimed steps (tracing, first touches) it times up to
`--max-steps` steps (the day is cycled when shorter) and prints, per model,
examples/s over the timed steps and the input-wait share of their time. It also
prints where the step's state was placed (an embedding table, its optimizer slot, an
expert kernel, a dynamic id map's table), so a run on a GPU shows what stayed on the
host.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/device_throughput.py

`--variants plain,xla,bf16,xla+bf16` runs each model under each of those training
options (`training.jit_compile: true`, `training.mixed_precision: bfloat16`, both);
`--lookup dynamic` puts every table behind a dynamic id map. On a GPU machine, one run:

    python benchmarks/device_throughput.py --variants plain,xla,bf16,xla+bf16
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as tt  # noqa: E402

from mtlrec.data_pipeline import make_dataset  # noqa: E402
from mtlrec.training.config import config_from_dict  # noqa: E402
from mtlrec.training.trainer import Trainer  # noqa: E402

DAY = "2024-01-01"
MODELS = ("mmoe", "esmm", "ple")


def write_day(root, rows, files, seed):
    """`rows` rows of raw ids (uniform over each large vocabulary) in `files` Parquet files."""
    rng = np.random.default_rng(seed)
    day = Path(root) / f"dt={DAY}"
    day.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        n = len(part)
        columns = {name: rng.integers(0, vocab, n, dtype=np.int64) for name, vocab in tt.CATEGORICAL}
        columns.update({name: rng.standard_normal(n).astype(np.float32) for name in tt.NUMERIC})
        click = (rng.random(n) < 0.2).astype(np.float32)
        columns["click"] = click
        columns["conversion"] = click * (rng.random(n) < 0.3).astype(np.float32)
        pq.write_table(pa.table(columns), day / f"part-{i:03d}.parquet", row_group_size=65536)


VARIANTS = {
    "plain": {},
    "xla": {"jit_compile": True},
    "bf16": {"mixed_precision": "bfloat16"},
    "xla+bf16": {"jit_compile": True, "mixed_precision": "bfloat16"},
}


def trainer_for(model, variant, root, args):
    training = {"batch_size": args.batch_size, "seed": 0, "shuffle_buffer": args.shuffle_buffer,
                **VARIANTS[variant]}
    config = config_from_dict({
        "name": f"device_{model}", "run_dir": str(Path(root).parent / "run_unused"),
        "data": {"root": str(root)},
        "schema": tt.make_schema("large", args.tiny_vocab, sequences=False, lookup=args.lookup),
        "tasks": tt.tasks_section(model),
        "model": {**tt.model_section(model), "seed": 1},
        "optimizer": {"dense": {"name": "adam", "learning_rate": 0.001},
                      "embedding": {"name": "lazy_adam", "learning_rate": 0.001}},
        "training": training,
    })
    trainer = Trainer(config, config.to_dict()["schema"])
    trainer.start_day(DAY)
    return trainer, config


def placements(trainer):
    """name -> device of the step's state: where TensorFlow put each kind of variable."""
    found = {}
    tables = trainer.embedding_variables
    if tables:
        found["embedding table"] = tables[0].value.device
        slots = [v for v in trainer.embedding_optimizer.variables if len(v.shape) == 2]
        if slots:
            found["embedding optimizer slot"] = slots[0].value.device
    dense = [v for v in trainer.dense_variables if len(v.shape) == 2]
    if dense:
        found["dense kernel"] = dense[0].value.device
    for layer in trainer.lookup_layers:
        for id_map in layer.id_maps.values():
            found["dynamic id map table"] = id_map.table.resource_handle.device
            break
    return found


def measure(model, variant, root, args):
    trainer, config = trainer_for(model, variant, root, args)
    schema = config.to_dict()["schema"]

    def day_dataset(epoch, skip):
        return make_dataset(root, [DAY], schema, batch_size=args.batch_size,
                            shuffle_buffer=args.shuffle_buffer, seed=epoch, repeat=True)

    dataset = trainer._distribute(day_dataset, 0, 0)
    step = trainer._step_for(dataset)
    batches = iter(dataset)
    waits, steps, examples = 0.0, 0.0, 0
    started = None
    for i in range(args.warmup_steps + args.max_steps):
        if i == args.warmup_steps:
            started = time.perf_counter()
        t0 = time.perf_counter()
        features, labels = next(batches)
        t1 = time.perf_counter()
        total, _, batch, _ = step(features, labels)
        total = float(total)  # the trainer reads the loss back every step
        t2 = time.perf_counter()
        if not np.isfinite(total):
            raise RuntimeError(f"{model}: non-finite loss at step {i}")
        if started is not None:
            waits += t1 - t0
            steps += t2 - t1
            examples += int(batch)
            if time.perf_counter() - started >= args.max_seconds:
                break
    elapsed = time.perf_counter() - started
    return {"examples/s": examples / elapsed, "wait": waits / (waits + steps),
            "ms/step": 1e3 * (waits + steps) / max(1, examples // args.batch_size),
            "steps": examples // args.batch_size, "placements": placements(trainer)}


def device_name():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x {details.get('device_name', gpus[0].name)}"
    return f"CPU only: {tt.cpu_name()}, {os.cpu_count()} cores"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--data", help="a root holding dt=2024-01-01 from an earlier run (default: "
                                       "write a new day into a temporary directory)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the written day")
    parser.add_argument("--files", type=int, default=4, help="Parquet files of the written day")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--shuffle-buffer", type=int, default=10_000,
                        help="rows (training.shuffle_buffer's default)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="timed seconds per model (at most)")
    parser.add_argument("--variants", default="plain", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--lookup", choices=("hash", "dynamic"), default="hash")
    parser.add_argument("--tiny-vocab", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"--variants: unknown {v!r} (known: {', '.join(VARIANTS)})")

    with tempfile.TemporaryDirectory(prefix="mtlrec_device_") as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            started = time.perf_counter()
            write_day(root, args.rows, args.files, args.seed)
            print(f"wrote {args.rows:,} rows in {args.files} files ({time.perf_counter() - started:.1f} s)")
        load = os.getloadavg()[0]
        results = {}
        for model in [m for m in args.models.split(",") if m]:
            for variant in variants:
                keras.backend.clear_session()
                results[model, variant] = r = measure(model, variant, root, args)
                print(f"  {model} {variant}: {r['examples/s']:,.0f} examples/s, input wait "
                      f"{r['wait']:.1%} ({r['steps']} steps)", flush=True)

    print()
    print(f"device: {device_name()} | load average {load:.2f} before / {os.getloadavg()[0]:.2f} after"
          f" | TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}")
    print(f"batch {args.batch_size}, shuffle buffer {args.shuffle_buffer:,}, lookup {args.lookup}; "
          f"{args.warmup_steps} warm-up steps, then up to {args.max_steps} steps / {args.max_seconds:g} s")
    print()
    print("| model | variant | examples/s | ms/step | input wait share | steps timed |")
    print("|-------|---------|-----------:|--------:|-----------------:|------------:|")
    for (model, variant), r in results.items():
        print(f"| {model} | {variant} | {r['examples/s']:,.0f} | {r['ms/step']:.1f} | {r['wait']:.1%} "
              f"| {r['steps']} |")
    print()
    print("placement (first model):")
    for what, device in next(iter(results.values()))["placements"].items():
        print(f"  {what}: {device or '(unplaced)'}")


if __name__ == "__main__":
    main()
