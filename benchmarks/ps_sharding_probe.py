"""Probe (not a benchmark): does ParameterServerStrategy shard a Keras 3 variable, and do the
lazy optimizers update its rows?

An in-process cluster on 127.0.0.1 (this process is the chief; 2 workers and 2 ps tasks are
`tf.distribute.Server`s in it), `ParameterServerStrategy` with `FixedShardsPartitioner(2)`.
Inside `strategy.scope()` it creates a 1000 x 16 table three ways (a `tf.Variable`, a
`keras.Variable`, a `keras.layers.Embedding`) and prints what each became; then it runs one
`LazyAdam` step on rows [1, 999] of the Keras table through `ClusterCoordinator.schedule` and
prints which rows moved.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/ps_sharding_probe.py
"""

import os
import socket

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process_cluster(workers=2, ps=2):
    spec = {
        "worker": [f"127.0.0.1:{free_port()}" for _ in range(workers)],
        "ps": [f"127.0.0.1:{free_port()}" for _ in range(ps)],
    }
    cluster = tf.train.ClusterSpec(spec)
    servers = [
        tf.distribute.Server(cluster, job_name=job, task_index=i, protocol="grpc", start=True)
        for job in ("worker", "ps")
        for i in range(len(spec[job]))
    ]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, rpc_layer="grpc")
    return resolver, servers


def describe(name, value):
    inner = value.value if isinstance(value, keras.Variable) else value
    shards = getattr(inner, "variables", None)
    where = [(v.shape.as_list(), v.device) for v in shards] if shards else inner.device
    print(f"{name}: {type(value).__name__} -> {type(inner).__name__}; {where}")
    return inner


def main():
    from mtlrec.optimizers.lazy_adam import LazyAdam

    resolver, _servers = in_process_cluster()
    strategy = tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(2)
    )
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        describe("tf.Variable", tf.Variable(tf.zeros([1000, 16])))
        table = keras.Variable(np.zeros((1000, 16), "float32"), name="table")
        describe("keras.Variable", table)
        embedding = keras.layers.Embedding(1000, 16)
        embedding.build((None,))
        describe("keras.layers.Embedding.embeddings", embedding.embeddings)
        optimizer = LazyAdam(learning_rate=0.1)
        optimizer.build([table])
        for slot in optimizer.variables[-2:]:
            describe(f"optimizer slot {slot.path}", slot)

    ids = tf.constant([1, 999])

    @tf.function
    def step():
        def replica_fn():
            shards = table.value.variables
            with tf.GradientTape() as tape:
                rows = tf.gather(table.value, ids)
                loss = tf.reduce_sum(rows - 1.0)
            # a ShardedVariable has no handle: the gradient is taken per shard and the
            # shards' IndexedSlices are put back together on global row ids
            grads = tape.gradient(loss, shards)
            offset, values, rows_ids = 0, [], []
            for shard, g in zip(shards, grads):
                if g is not None:
                    values.append(g.values)
                    rows_ids.append(g.indices + offset)
                offset += shard.shape[0]
            grad = tf.IndexedSlices(tf.concat(values, 0), tf.concat(rows_ids, 0), table.shape)
            optimizer.apply_gradients([(grad, table)])
            return tf.constant(0)

        return strategy.run(replica_fn)

    try:
        coordinator.schedule(step)
        coordinator.join()
        value = tf.concat([v.read_value() for v in table.value.variables], 0).numpy() \
            if hasattr(table.value, "variables") else table.numpy()
        moved = np.flatnonzero(np.abs(value).sum(axis=1) > 0)
        print(f"lazy Adam step: rows that moved {moved.tolist()}")
    except Exception as err:  # the probe reports what failed, it does not stop at it
        print(f"lazy Adam step failed: {type(err).__name__}: {str(err)[-1500:]}")


if __name__ == "__main__":
    main()
