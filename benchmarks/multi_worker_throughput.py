"""Training throughput of one process against two MultiWorkerMirroredStrategy workers.

For each table size (`--table-rows`, two categorical tables of that many rows, dim
16, plus 3 numerics; ESMM, towers [64], lazy Adam on the tables), one fresh process
with the default strategy and then `--workers` worker processes on 127.0.0.1 (one
`TF_CONFIG` each) run the Trainer's own step (`Trainer._build_step`, what
`train_day` calls) on in-memory batches of raw ids drawn uniformly from the
table; each worker gets its share of the global batch, as `train_day` gives
it. Examples per second (global batch x steps / seconds) over the last
`--timed-steps` steps of `--steps`, by wall clock; the chief's time is reported.

The question it answers: does a multi-worker step cost rows touched (like one
process) or table size? Two workers on one 2-core machine compete for the same
cores and add a gRPC all-reduce per step, so they are not expected to be faster
than one process here; the ratio large / small tables is the point.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/multi_worker_throughput.py
"""

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def config_dict(rows, batch_size):
    categorical = [
        {"name": name, "dtype": "int64", "num_buckets": rows, "dim": 16}
        for name in ("user_id", "item_id")
    ]
    return {
        "name": "bench_multi_worker",
        "run_dir": "/tmp/mtlrec_bench_unused",
        "data": {"root": "/tmp/mtlrec_bench_unused", "funnel": []},
        "schema": {
            "categorical": categorical,
            "numeric": [{"name": f"n{i}"} for i in range(3)],
            "labels": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
        },
        "tasks": [{"name": "ctr", "label": "click"},
                  {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}],
        "model": {"type": "esmm", "tower_units": [64], "seed": 1},
        "optimizer": {"dense": {"name": "adam", "learning_rate": 0.001},
                      "embedding": {"name": "lazy_adam", "learning_rate": 0.001}},
        "training": {"batch_size": batch_size, "seed": 0},
    }


def run_one(args):
    """One process (default strategy) or one worker (TF_CONFIG set): prints a JSON line."""
    import numpy as np
    import tensorflow as tf

    multi = bool(os.environ.get("TF_CONFIG"))
    # Made before TensorFlow runs anything, as the CLI does.
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if multi else tf.distribute.get_strategy()
    from mtlrec.training.config import config_from_dict
    from mtlrec.training.trainer import Trainer

    config = config_from_dict(config_dict(args.rows, args.batch_size))
    trainer = Trainer(config, config.to_dict()["schema"], strategy=strategy)
    workers = trainer.sharding.count if trainer.sharding.active else 1
    index = trainer.sharding.index if trainer.sharding.active else 0
    per_worker = args.batch_size // workers
    rng = np.random.default_rng(100 + index)
    batches = []
    for _ in range(4):
        features = {n: rng.integers(0, args.rows, per_worker, dtype=np.int64)
                    for n in ("user_id", "item_id")}
        features.update({f"n{i}": rng.random(per_worker, dtype=np.float32) for i in range(3)})
        click = (rng.random(per_worker) < 0.3).astype(np.float32)
        labels = {"click": click, "conversion": click * (rng.random(per_worker) < 0.2)}
        batches.append((features, labels))

    def per_worker_dataset(_context=None):
        features = {k: np.concatenate([b[0][k] for b in batches]) for k in batches[0][0]}
        labels = {k: np.concatenate([b[1][k] for b in batches]) for k in batches[0][1]}
        ds = tf.data.Dataset.from_tensor_slices((features, labels)).batch(per_worker)
        return ds.cache().repeat()

    if trainer.sharding.active:
        dist = strategy.distribute_datasets_from_function(per_worker_dataset)
    else:
        dist = strategy.experimental_distribute_dataset(per_worker_dataset())
    step = trainer._build_step(dist.element_spec)
    iterator = iter(dist)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        total = step(*next(iterator))[0]
        float(strategy.experimental_local_results(total)[0])
        times.append(time.perf_counter() - start)
    timed = times[-args.timed_steps:]
    print(json.dumps({"workers": workers, "index": index,
                      "examples_per_s": args.batch_size * len(timed) / sum(timed),
                      "step_ms": 1e3 * sum(timed) / len(timed)}), flush=True)


def launch(args, rows, workers):
    """Examples/s of the chief (worker 0) or of the single process."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--rows", str(rows),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--timed-steps", str(args.timed_steps)]
    procs = []
    if workers == 1:
        env.pop("TF_CONFIG", None)
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    else:
        hosts = [f"127.0.0.1:{p}" for p in free_ports(workers)]
        for i in range(workers):
            tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
            procs.append(subprocess.Popen(cmd, env=dict(env, TF_CONFIG=json.dumps(tf_config)),
                                          stdout=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=args.timeout)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark child failed (exit {proc.returncode}): {cmd}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return next(r for r in results if r["index"] == 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table-rows", default="10000,1000000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024, help="global batch")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--timed-steps", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_one(args)

    load_before = os.getloadavg()
    table = []
    for rows in [int(r) for r in args.table_rows.split(",") if r]:
        one = launch(args, rows, 1)
        multi = launch(args, rows, args.workers)
        table.append((rows, one, multi))
        print(f"  2 x {rows:,} rows: one process {one['examples_per_s']:,.0f} examples/s, "
              f"{args.workers} workers {multi['examples_per_s']:,.0f}", flush=True)
    load_after = os.getloadavg()

    import tensorflow as tf

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_throughput import cpu_name

    print()
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load "
          f"average {load_before[0]:.2f} before / {load_after[0]:.2f} after | Python "
          f"{platform.python_version()}, TensorFlow {tf.__version__}")
    print(f"ESMM, 2 tables x dim 16, global batch {args.batch_size}, {args.workers} workers on "
          f"127.0.0.1; wall clock over the last {args.timed_steps} of {args.steps} steps")
    print()
    print(f"| tables | one process examples/s | step ms | {args.workers} workers examples/s "
          "| step ms | workers / one process |")
    print("|---|---:|---:|---:|---:|---:|")
    for rows, one, multi in table:
        print(f"| 2 x {rows:,} rows | {one['examples_per_s']:,.0f} | {one['step_ms']:.1f} "
              f"| {multi['examples_per_s']:,.0f} | {multi['step_ms']:.1f} "
              f"| {multi['examples_per_s'] / one['examples_per_s']:.2f} |")
    if len(table) > 1:
        (_, one_s, multi_s), (_, one_l, multi_l) = table[0], table[-1]
        print()
        print(f"largest / smallest tables: one process "
              f"{one_l['examples_per_s'] / one_s['examples_per_s']:.2f}, {args.workers} workers "
              f"{multi_l['examples_per_s'] / multi_s['examples_per_s']:.2f}")


if __name__ == "__main__":
    main()
