"""Peak memory of evaluating a day with `evaluate_model`: bounded by the batch, not the day.

For each day size (default 1,000,000 and 10,000,000 rows) a fresh child
process builds a small ESMM (user_id, item_id, price; towers [16]) and runs
the real `mtlrec.training.evaluation.evaluate_model` over a synthetic day
streamed from `tf.data` (stateless random features and labels made per batch,
so the day itself is never held anywhere), with the extras `user_id` (GAUC,
about one row in 50 per user), `true_ctr` and `true_cvr` (truth AUCs): every
metric is on. GAUC rows beyond `SPILL_MEMORY_ROWS` per output are spilled to
a temporary directory. This process samples the child's RSS from
`/proc/<pid>/status` every `--sample-ms`.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/eval_memory.py

With ``PYTHONPATH`` pointing at an older checkout it measures that
checkout's `evaluate_model` (one that kept the whole day in memory).
"""

import argparse
import inspect
import json
import os
import platform
import sys
import tempfile
import time

from train_memory import rss_mb, sample_child

SCHEMA = {
    "categorical": [
        {"name": "user_id", "dtype": "int64", "num_buckets": 100_000, "dim": 8},
        {"name": "item_id", "dtype": "int64", "num_buckets": 10_000, "dim": 8},
    ],
    "numeric": [{"name": "price", "normalize": "log1p", "default": 0.0}],
    "labels": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
}
TASKS = [
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
]


def synthetic_day(rows, batch_size, users):
    import tensorflow as tf

    def batch(i):
        n = tf.minimum(tf.constant(batch_size, tf.int64), rows - i * batch_size)
        seed = tf.stack([i, tf.constant(7, tf.int64)])
        user = tf.random.stateless_uniform([n], seed, 0, users, dtype=tf.int64)
        item = tf.random.stateless_uniform([n], seed + 1, 0, 10_000, dtype=tf.int64)
        price = tf.random.stateless_uniform([n], seed + 2, 0.0, 100.0)
        true_ctr = tf.sigmoid(tf.random.stateless_normal([n], seed + 3, -2.0))
        true_cvr = tf.sigmoid(tf.random.stateless_normal([n], seed + 4, -1.0))
        click = tf.cast(tf.random.stateless_uniform([n], seed + 5) < true_ctr, tf.float32)
        conversion = click * tf.cast(tf.random.stateless_uniform([n], seed + 6) < true_cvr, tf.float32)
        features = {"user_id": user, "item_id": item, "price": price}
        labels = {"click": click, "conversion": conversion, "user_id": user,
                  "true_ctr": true_ctr, "true_cvr": true_cvr}
        return features, labels

    batches = -(-rows // batch_size)
    return tf.data.Dataset.range(batches).map(batch).prefetch(2)


def child(rows, batch_size, spill_dir):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from mtlrec.models.registry import build_model
    from mtlrec.training.evaluation import evaluate_model

    model = build_model({"type": "esmm", "tower_units": [16], "seed": 1}, SCHEMA, TASKS)
    print(json.dumps({"event": "imported", "rss": rss_mb()}), flush=True)
    # `--before`: the same run on a checkout whose evaluate_model predates spill_dir
    spill = {"spill_dir": spill_dir} if "spill_dir" in inspect.signature(evaluate_model).parameters else {}
    began = time.perf_counter()
    result = evaluate_model(model, TASKS, synthetic_day(rows, batch_size, max(1, rows // 50)),
                            extras=("user_id", "true_ctr", "true_cvr"), **spill)
    print(json.dumps({"event": "done", "seconds": time.perf_counter() - began,
                      "rows": result.rows, "metrics": result.metrics}), flush=True)


def run_child(rows, args, spill_dir):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(rows),
           "--batch-size", str(args.batch_size), "--spill-dir", spill_dir]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return sample_child(cmd, env, args.sample_ms)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1000000,10000000", help="comma-separated day sizes")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--sample-ms", type=float, default=20.0)
    p.add_argument("--spill-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.batch_size, args.spill_dir)
        return
    load_before = os.getloadavg()
    results = []
    for rows in [int(r) for r in args.rows.split(",") if r]:
        with tempfile.TemporaryDirectory(prefix="mtlrec_eval_memory_") as spill_dir:
            peak, samples, events = run_child(rows, args, spill_dir)
        done = events["done"]
        results.append((rows, events["imported"]["rss"], peak, samples, done["seconds"],
                        done["metrics"]["ctr"]))
        print(f"  {rows:,} rows: peak {peak:,.0f} MB ({samples} samples), "
              f"{done['seconds']:.0f} s", flush=True)
    load_after = os.getloadavg()
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before / {load_after[0]:.2f} after | Python {platform.python_version()}")
    print(f"batch {args.batch_size}; RSS sampled every {args.sample_ms:g} ms")
    print()
    print("|   day rows | evaluate s | RSS after model built MB | peak RSS MB | ctr auc | ctr gauc |")
    print("|-----------:|-----------:|------------------------:|------------:|--------:|---------:|")
    for rows, built, peak, _n, secs, ctr in results:
        print(f"| {rows:>10,} | {secs:10.0f} | {built:23.0f} | {peak:11.0f} "
              f"| {ctr['auc']:.4f} | {ctr['gauc']:.4f} |")
    if len(results) > 1:
        print(f"\npeak RSS, largest / smallest day: {results[-1][2] / results[0][2]:.3f}")


if __name__ == "__main__":
    main()
