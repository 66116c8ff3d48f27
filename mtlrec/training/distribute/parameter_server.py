"""``training.strategy: parameter_server``: the cluster of ``TF_CONFIG``, its checks and the
strategy whose variable partitioner row-shards the embedding tables over the ps tasks.

Tasks (``TF_CONFIG``'s ``cluster``): one ``chief`` (runs mtlrec's training loop through a
``ClusterCoordinator`` and owns the run directory), one or more ``worker`` (run the steps
the chief schedules) and one or more ``ps`` (hold the variables). Every task runs the same
``mtlrec train`` command; a worker or ps task serves (``serve``) until it is stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time

import keras
import tensorflow as tf

from mtlrec.conventions.seeding import fresh_initializer
from mtlrec.training.errors import RunError

logger = logging.getLogger("mtlrec.training")

#: Environment variable -> its default, in seconds. MTLREC_PS_CONNECT_TIMEOUT: how long the
#: chief waits for every task of the cluster to accept connections. MTLREC_PS_STALL_WARNING:
#: how long the chief waits for a step's result before it logs which tasks do not answer
#: (and again every as many seconds while it still waits).
SECONDS_SETTINGS = {"MTLREC_PS_CONNECT_TIMEOUT": 60.0, "MTLREC_PS_STALL_WARNING": 60.0}


def env_seconds(name: str) -> float:
    """The seconds of environment variable ``name`` (one of ``SECONDS_SETTINGS``; its
    default when unset).

    Raises:
        ValueError: the value is not a number of seconds > 0, naming the variable.
    """
    raw = os.environ.get(name)
    if raw is None:
        return SECONDS_SETTINGS[name]
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also NaN
        raise ValueError(f"{name}: expected a number of seconds > 0, got {raw!r}")
    return value


def ps_cluster() -> tuple[dict, dict]:
    """``(cluster, task)`` of ``TF_CONFIG`` for a parameter-server run.

    Raises:
        ValueError: (a config error) no ``TF_CONFIG``, no ``ps`` tasks, no ``chief``,
            no ``worker``, or a task that is not in the cluster.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "training.strategy: parameter_server needs TF_CONFIG with chief, worker and ps tasks"
        )
    try:
        tf_config = json.loads(raw)
        cluster, task = dict(tf_config.get("cluster") or {}), dict(tf_config.get("task") or {})
    except (ValueError, AttributeError, TypeError) as err:
        raise ValueError(f"TF_CONFIG: expected a JSON object with cluster and task ({err})") from None
    for job, wanted in (("ps", "the parameter servers"), ("chief", "the task that runs the loop"), ("worker", "the tasks that run the steps")):
        if not cluster.get(job):
            raise ValueError(
                f"TF_CONFIG: training.strategy parameter_server needs {job} tasks ({wanted}); "
                f"the cluster has {sorted(cluster) or 'none'}"
            )
    if len(cluster["chief"]) != 1:
        raise ValueError(f"TF_CONFIG: expected one chief task, got {len(cluster['chief'])}")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(f"TF_CONFIG: task {task!r} is not a task of the cluster {sorted(cluster)}")
    return cluster, {"type": kind, "index": index}


def wait_for_tasks(cluster: dict, timeout: float) -> None:
    """Returns once every worker and ps task accepts TCP connections.

    Raises:
        RunError: naming the tasks still unreachable after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while (pending := unreachable_tasks(cluster)) and time.monotonic() <= deadline:
        time.sleep(0.5)
    if pending:
        raise RunError(
            f"TF_CONFIG: parameter_server cluster unreachable after {timeout:g} s: {pending}; "
            "start `mtlrec train` with its TF_CONFIG on every task"
        )


def unreachable_tasks(cluster: dict) -> str:
    """The worker and ps tasks of ``cluster`` that refuse a TCP connection now, as
    ``"worker 1 (host:port), ..."`` (empty when every task accepts)."""
    names = []
    for job in ("worker", "ps"):
        for i, address in enumerate(cluster.get(job, [])):
            host, _, port = address.rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=2):
                    pass
            except (OSError, ValueError):
                names.append(f"{job} {i} ({address})")
    return ", ".join(names)


def is_embedding_table_name(name: str) -> bool:
    """Whether a variable's own name (its last path component) names an embedding table:
    it contains "embedding" (``FeatureEmbedding``'s ``embedding_<feature>``,
    ``keras.layers.Embedding``'s ``embeddings``)."""
    return "embedding" in name.split("/")[-1].split(":")[0].lower()


class TablePartitioner:
    """Splits the embedding tables by rows over all ps tasks; every other variable stays
    whole (the strategy places it on one ps task, round robin).

    ``ParameterServerStrategy`` calls a partitioner with the shape and dtype only: the
    variable creator of ``tables_sharded`` tells it, by the variable's name, whether the
    variable being created is a table (``is_embedding_table_name``).
    """

    def __init__(self, num_ps: int):
        self.num_ps = num_ps
        self._table = False

    def __call__(self, shape, dtype):
        shards = min(self.num_ps, int(shape[0])) if self._table and len(shape) >= 1 else 1
        return [max(shards, 1)] + [1] * (len(shape) - 1)

    @contextlib.contextmanager
    def tables_sharded(self):
        """Variables created inside (under the strategy's scope) are sharded when they are tables."""

        def creator(next_creator, **kwargs):
            previous = self._table
            self._table = is_embedding_table_name(kwargs.get("name") or "")
            if self._table:
                kwargs.update(shard_initial_value(kwargs.get("initial_value")))
            try:
                return next_creator(**kwargs)
            finally:
                self._table = previous

        with tf.variable_creator_scope(creator):
            yield


def shard_initial_value(initial_value) -> dict:
    """``shape`` and an ``initial_value`` that builds one shard alone, for a table that Keras
    creates from its initializer (``lambda: initializer(shape, dtype)``); ``{}`` otherwise.

    Given Keras' callable, which takes no partition arguments and comes without a ``shape``,
    the strategy builds the whole table on the chief and sends each ps task its slice (at
    16M rows that left each ps holding about twice its half, docs/results/scaling.md). With this
    one each ps task draws its own rows: a copy of the table's initializer seeded by the
    shard's first row (``fresh_initializer``), so the same seed and ps count give the same
    tables, though not the rows one process draws.
    """
    code = getattr(initial_value, "__code__", None)
    if code is None or set(code.co_freevars) != {"initializer", "self"}:
        return {}
    cells = dict(zip(code.co_freevars, (c.cell_contents for c in initial_value.__closure__)))
    initializer, variable = cells["initializer"], cells["self"]
    if not isinstance(initializer, keras.initializers.Initializer):
        return {}
    shape, dtype = tuple(variable.shape), variable.dtype

    def initial_shard(partition_shape=None, partition_offset=None):
        if partition_shape is None:
            return initializer(shape, dtype=dtype)
        rows = fresh_initializer(initializer, None, f"rows_from_{partition_offset[0]}")
        return rows(tuple(partition_shape), dtype=dtype)

    return {"shape": shape, "initial_value": initial_shard}


def strategy_or_serve():
    """On the chief: its ``ParameterServerStrategy`` (with its ``TablePartitioner`` as
    ``.partitioner``), once every task answers. On a worker or ps task: serve until the
    process is stopped (does not return).

    Raises:
        ValueError: a bad ``TF_CONFIG`` (see ``ps_cluster``) or ``MTLREC_PS_*`` setting.
        RunError: a task that cannot be reached within ``MTLREC_PS_CONNECT_TIMEOUT``.
    """
    cluster, task = ps_cluster()
    if task["type"] != "chief":
        serve(cluster, task)
    env_seconds("MTLREC_PS_STALL_WARNING")  # a bad value stops the chief before it connects
    wait_for_tasks(cluster, env_seconds("MTLREC_PS_CONNECT_TIMEOUT"))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    partitioner = TablePartitioner(len(cluster["ps"]))
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    strategy.partitioner = partitioner
    logger.info(
        "ParameterServerStrategy: %d workers, %d ps tasks (embedding tables split by rows over them)",
        len(cluster["worker"]), len(cluster["ps"]),
    )
    return strategy


def serve(cluster: dict, task: dict) -> None:
    """Run this worker or ps task's server until the process is stopped.

    Raises:
        RunError: the server cannot listen on its address (the port is taken, say).
    """
    address = cluster[task["type"]][task["index"]]
    try:
        server = tf.distribute.Server(
            tf.train.ClusterSpec(cluster), job_name=task["type"], task_index=task["index"], protocol="grpc", start=True
        )
    except tf.errors.OpError as err:
        raise RunError(
            f"TF_CONFIG: {task['type']} {task['index']} cannot serve at {address} ({err.message}); "
            "is its port held by another process?"
        ) from None
    logger.info("%s %d serving at %s", task["type"], task["index"], address)
    server.join()
    raise SystemExit(0)


def local_cluster(workers: int = 2, ps: int = 2) -> dict:
    """A ``TF_CONFIG`` cluster of one chief, ``workers`` workers and ``ps`` ps tasks on
    127.0.0.1, each on a port free at the time of the call (for tests and benchmarks)."""
    sockets = [socket.socket() for _ in range(1 + workers + ps)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return {"chief": addresses[:1], "worker": addresses[1:1 + workers], "ps": addresses[1 + workers:]}


def tf_config(cluster: dict, job: str, index: int = 0) -> str:
    """The ``TF_CONFIG`` value of task ``job`` ``index`` of ``cluster``."""
    return json.dumps({"cluster": cluster, "task": {"type": job, "index": index}})
