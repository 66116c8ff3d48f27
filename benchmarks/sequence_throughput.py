"""Training examples per CPU-second with each history encoder, against `mean`, in one run.

The features of `train_throughput.py` (20 categorical features, dim 16, 5 numerics; large
vocabularies: 52.9M embedding parameters, or "tiny": 1,000 buckets each) plus one behavior
history of `--max-len` steps (default 50) read together from two sequence features,
`hist_item_id` (sharing the `item_id` table) and `hist_category` (sharing
`item_category`'s), each row holding between 1 and max_len behaviors (uniform). For ESMM
and MMoE (the shapes of `train_throughput.py`) the history is read by each encoder of
`model.sequence_encoders` with its default settings: `mean` (named by no history: the
model as before encoders), `target_attention`, `self_attention`,
`property_gated_lstm`. Each configuration runs the mtlrec `Trainer`'s own step (LazyAdam
on the tables, Adam on the rest) on the same in-memory batches: warm-up, then
`--rounds` timed windows taken in turns, the median reported; `vs mean` is an encoder's
rate over `mean`'s of the same model, from the same run.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/sequence_throughput.py --quick
"""

import argparse
import gc
import os
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from train_throughput import CATEGORICAL, NUMERIC, as_tensors, cpu_name, make_schema, model_section, tasks_section, timed  # noqa: E402

from mtlrec.training.config import config_from_dict  # noqa: E402
from mtlrec.training.trainer import Trainer  # noqa: E402

MODELS = ("esmm", "mmoe")
ENCODERS = ("mean", "target_attention", "self_attention", "property_gated_lstm")
HISTORY = ["hist_item_id", "hist_category"]


def schema(kind, args):
    out = make_schema(kind, args.tiny_vocab, sequences=False)
    out["sequence"] = [
        {"name": "hist_item_id", "dtype": "int64", "max_len": args.max_len, "shared_with": "item_id"},
        {"name": "hist_category", "dtype": "int64", "max_len": args.max_len, "shared_with": "item_category"},
    ]
    return out


def make_batches(args):
    rng = np.random.default_rng(args.seed)
    vocab = dict(CATEGORICAL)
    batches = []
    for _ in range(args.num_batches):
        b = args.batch_size
        features = {n: rng.integers(0, v, b, dtype=np.int64) for n, v in CATEGORICAL}
        for n in NUMERIC:
            features[n] = rng.standard_normal(b).astype(np.float32)
        pad = np.arange(args.max_len)[None, :] >= rng.integers(1, args.max_len + 1, b)[:, None]
        for name, table in (("hist_item_id", "item_id"), ("hist_category", "item_category")):
            ids = rng.integers(0, vocab[table], (b, args.max_len), dtype=np.int64)
            ids[pad] = -1
            features[name] = ids
        click = (rng.random(b) < 0.2).astype(np.float32)
        conversion = click * (rng.random(b) < 0.3).astype(np.float32)
        batches.append((features, {"click": click, "conversion": conversion}))
    return batches


def runner(model, kind, encoder, args, batches):
    section = {**model_section(model), "seed": 1}
    if encoder != "mean":
        section["sequence_encoders"] = {"history": {"encoder": encoder, "features": HISTORY}}
    config = config_from_dict({
        "name": f"bench_{model}_{encoder}",
        "run_dir": "/tmp/mtlrec_bench_unused",
        "data": {"root": "/tmp/mtlrec_bench_unused"},
        "schema": schema(kind, args),
        "tasks": tasks_section(model),
        "model": section,
        "optimizer": {"dense": {"name": "adam", "learning_rate": 0.001},
                      "embedding": {"name": "lazy_adam", "learning_rate": 0.001}},
        "training": {"batch_size": args.batch_size, "seed": 0},
    })
    trainer = Trainer(config, config.to_dict()["schema"])
    trainer.start_day("2024-01-01")
    step = trainer._build_step()
    names = list(trainer.model.input.keys())
    data = [as_tensors(b, names) for b in batches]

    def run(i):
        features, labels = data[i % len(data)]
        return step(features, labels)[0]

    dense = sum(int(np.prod(v.shape)) for v in trainer.model.trainable_variables) - sum(
        int(np.prod(v.shape)) for v in trainer.embedding_variables)
    return run, dense, trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--vocab", default="large", choices=("large", "tiny"))
    parser.add_argument("--tiny-vocab", type=int, default=1000)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--num-batches", type=int, default=8, help="distinct batches, cycled")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per window (at least)")
    parser.add_argument("--min-seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="--warmup 3 --warmup-seconds 3 --steps 5 --min-seconds 2 --rounds 3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.warmup_seconds, args.steps, args.min_seconds, args.rounds = 3, 3.0, 5, 2.0, 3
    models = [m for m in args.models.split(",") if m]
    encoders = [e for e in args.encoders.split(",") if e]

    batches = make_batches(args)
    load_before = os.getloadavg()
    results, dense, started = {}, {}, time.perf_counter()
    for model in models:
        keras.backend.clear_session()
        gc.collect()
        runners = {}
        for encoder in encoders:
            run, n, obj = runner(model, args.vocab, encoder, args, batches)
            i, start = 0, time.perf_counter()
            while i < args.warmup or time.perf_counter() - start < args.warmup_seconds:
                np.asarray(run(i))
                i += 1
            runners[encoder] = (run, obj)
            dense[model, encoder] = n
        for _ in range(args.rounds):  # in turns: a change of load hits every encoder alike
            for encoder, (run, _obj) in runners.items():
                results.setdefault((model, encoder), []).append(timed(run, args))
        for encoder in runners:
            rates = results[model, encoder]
            print(f"  {model:<5} {encoder:<20} examples/s: " + "  ".join(f"{w:,.0f}" for w, _ in rates)
                  + "  per CPU-s: " + "  ".join(f"{c:,.0f}" for _, c in rates), flush=True)
        del runners
    load_after = os.getloadavg()

    print()
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before / "
          f"{load_after[0]:.2f} after | Python {platform.python_version()}, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"vocab {args.vocab}, history of max_len {args.max_len} ({' + '.join(HISTORY)}), batch "
          f"{args.batch_size}; {args.rounds} windows of >= {args.steps} steps and >= {args.min_seconds:g} s "
          f"per configuration, median reported; total {time.perf_counter() - started:.0f} s")
    print()
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    wall = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
    print("| model | encoder              | dense params | examples/s | examples/CPU-s | vs mean (CPU) |")
    print("|-------|----------------------|-------------:|-----------:|---------------:|--------------:|")
    for model in models:
        for encoder in encoders:
            base = cpu.get((model, "mean"))
            ratio = f"{cpu[model, encoder] / base:.2f}" if base else ""
            print(f"| {model:<5} | {encoder:<20} | {dense[model, encoder]:>12,} | {wall[model, encoder]:>10,.0f} "
                  f"| {cpu[model, encoder]:>14,.0f} | {ratio:>13} |")


if __name__ == "__main__":
    main()
