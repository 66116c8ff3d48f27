"""Reproduction (not a benchmark): when does a `ClusterCoordinator.schedule`d step return?

A cluster of 2 workers and 2 ps tasks on 127.0.0.1; this process is the chief. The step
is keras-free (`--step sharded`): a 128 x 4 `tf.Variable` split 64 + 64 rows over the ps
tasks (`FixedShardsPartitioner(2)`), `tf.nn.embedding_lookup` of 8 ids over its shards,
a squared loss, each shard's `IndexedSlices` gradient applied with `scatter_sub`;
`--step keras` adds a Keras `Dense` on the looked-up rows; `--dataset` takes the ids from
`coordinator.create_per_worker_dataset` instead of a tensor of the chief.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/ps_hang_repro.py \
        [--servers inprocess|subprocess] [--inter-op N] [--chief-threads N] \
        [--step sharded|keras] [--dataset] [--steps 3] [--timeout 90]

`--servers inprocess`: the 4 tasks are `tf.distribute.Server`s of this process;
`subprocess`: one process per task. `--inter-op N` sets `TF_NUM_INTEROP_THREADS=N` before
TensorFlow starts (inherited by the task processes); `--chief-threads N` calls
`tf.config.threading.set_inter_op_parallelism_threads(N)` in the chief only. After
`--timeout` seconds without all steps back it prints every thread's stack, kills the task
processes it started and exits 3. What it shows is in docs/results/scaling.md (the inter-op
thread requirement of parameter-server training).
"""

import argparse
import faulthandler
import json
import os
import socket
import subprocess
import sys
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if "--inter-op" in sys.argv:  # read once by TensorFlow when it makes its thread pools
    os.environ["TF_NUM_INTEROP_THREADS"] = sys.argv[sys.argv.index("--inter-op") + 1]

import tensorflow as tf  # noqa: E402

ROWS, DIM, BATCH = 128, 4, 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(spec, job, index):
    """Run one task until killed (the body of a --servers subprocess task)."""
    server = tf.distribute.Server(
        tf.train.ClusterSpec(spec), job_name=job, task_index=index, protocol="grpc", start=True
    )
    server.join()


def start_cluster(mode):
    spec = {
        "chief": [f"127.0.0.1:{free_port()}"],
        "worker": [f"127.0.0.1:{free_port()}" for _ in range(2)],
        "ps": [f"127.0.0.1:{free_port()}" for _ in range(2)],
    }
    tasks = [(job, i) for job in ("worker", "ps") for i in range(2)]
    if mode == "inprocess":
        kept = [
            tf.distribute.Server(
                tf.train.ClusterSpec(spec), job_name=job, task_index=i, protocol="grpc", start=True
            )
            for job, i in tasks
        ]
    else:
        kept = [
            subprocess.Popen(
                [sys.executable, __file__, "--serve", json.dumps(spec), job, str(i)]
            )
            for job, i in tasks
        ]
        time.sleep(3)
    os.environ["TF_CONFIG"] = json.dumps({"cluster": spec, "task": {"type": "chief", "index": 0}})
    return kept


def sharded_step(strategy):
    """A step on a ShardedVariable: rows read over the shards, one row update per shard."""
    with strategy.scope():
        table = tf.Variable(tf.ones([ROWS, DIM]))
    shards = table.variables

    @tf.function
    def step(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.nn.embedding_lookup(shards, ids)))
        for shard, grad in zip(shards, tape.gradient(loss, shards)):
            shard.scatter_sub(tf.IndexedSlices(0.1 * grad.values, grad.indices, grad.dense_shape))
        return loss

    return step, table


def keras_step(strategy):
    """A Keras layer's call inside the step: a Dense on the looked-up rows."""
    import keras

    with strategy.scope():
        table = tf.Variable(tf.ones([ROWS, DIM]))
        dense = keras.layers.Dense(1, kernel_initializer="ones")
        dense.build((None, DIM))
    shards = table.variables

    @tf.function
    def step(ids):
        with tf.GradientTape() as tape:
            out = dense(tf.nn.embedding_lookup(shards, ids))
            loss = tf.reduce_sum(tf.square(out))
        for shard, grad in zip(shards, tape.gradient(loss, shards)):
            shard.scatter_sub(tf.IndexedSlices(0.1 * grad.values, grad.indices, grad.dense_shape))
        return loss

    return step, table


def stop(kept):
    for task in kept:
        if isinstance(task, subprocess.Popen):
            task.kill()
            task.wait()


def hang(kept, timeout):
    print(f"HANG: no step returned within {timeout} s; stacks:", flush=True)
    faulthandler.dump_traceback(all_threads=True)
    stop(kept)
    os._exit(3)


STEPS = {"sharded": sharded_step, "keras": keras_step}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        spec, job, index = sys.argv[2:5]
        serve(json.loads(spec), job, int(index))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", choices=["inprocess", "subprocess"], default="inprocess")
    parser.add_argument("--inter-op", type=int, default=0, help="TF_NUM_INTEROP_THREADS (0: unset)")
    parser.add_argument("--chief-threads", type=int, default=0)
    parser.add_argument("--step", choices=sorted(STEPS), default="sharded")
    parser.add_argument("--dataset", action="store_true", help="ids from create_per_worker_dataset")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=90)
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, args {vars(args)}", flush=True)
    if args.chief_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.chief_threads)
    kept = start_cluster(args.servers)
    watchdog = threading.Timer(args.timeout, hang, args=(kept, args.timeout))
    watchdog.daemon = True
    watchdog.start()
    try:
        strategy = tf.distribute.ParameterServerStrategy(
            tf.distribute.cluster_resolver.TFConfigClusterResolver(),
            variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(2),
        )
        coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
        step, table = STEPS[args.step](strategy)
        print("table", type(table).__name__, [(v.shape.as_list(), v.device) for v in getattr(table, "variables", [table])], flush=True)
        if args.dataset:
            def dataset_fn():
                return tf.data.Dataset.range(ROWS).batch(BATCH).repeat()

            iterator = iter(coordinator.create_per_worker_dataset(dataset_fn))

            @tf.function
            def scheduled(it):
                return step(next(it))

            schedule = lambda: coordinator.schedule(scheduled, args=(iterator,))  # noqa: E731
        else:
            ids = tf.range(BATCH, dtype=tf.int64) * 15  # rows on both shards
            schedule = lambda: coordinator.schedule(step, args=(ids,))  # noqa: E731
        for i in range(args.steps):
            start = time.perf_counter()
            loss = schedule().fetch()
            print(f"step {i}: loss {float(loss):.4f} in {time.perf_counter() - start:.2f} s", flush=True)
        watchdog.cancel()
        print("OK: every scheduled step returned", flush=True)
    finally:
        stop(kept)
    os._exit(0)  # the coordinator's threads would keep an in-process cluster alive


if __name__ == "__main__":
    main()
