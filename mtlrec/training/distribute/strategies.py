"""Which ``tf.distribute`` strategy a run uses (``training.strategy``), and which process is the chief.

A multi-worker strategy must be made before TensorFlow runs anything (the CLI makes it first).
"""

from __future__ import annotations

import logging

import tensorflow as tf

from mtlrec.conventions.key_paths import KeyPathError
from mtlrec.training.distribute.cluster_env import cluster_from_env
from mtlrec.training.distribute.parameter_server import strategy_or_serve
from mtlrec.training.distribute.sharding import sharding_of

logger = logging.getLogger("mtlrec.training")


#: ``training.strategy`` values.
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "parameter_server")


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy of ``training.strategy``.

    ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster, else the
    default (one device). ``mirrored``: ``MirroredStrategy`` over the local GPUs (else the
    logical CPU devices). ``multi_worker``: ``MultiWorkerMirroredStrategy`` (``TF_CONFIG`` required).
    ``parameter_server``: see ``mtlrec.training.distribute.parameter_server.strategy_or_serve`` (on a
    worker or ps task it serves until the process is stopped and does not return).
    A multi-worker strategy must be made before TensorFlow runs anything (the CLI does).
    """
    if kind not in STRATEGIES:
        raise KeyPathError("training.strategy", f"expected one of {', '.join(STRATEGIES)}, got {kind!r}")
    cluster = cluster_from_env()
    if kind == "auto":
        kind = "multi_worker" if cluster else "default"
    if kind == "parameter_server":
        return strategy_or_serve()
    if kind == "multi_worker":
        if not cluster:
            raise ValueError("training.strategy: multi_worker needs TF_CONFIG describing the cluster")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        shard = sharding_of(strategy)
        logger.info(
            "MultiWorkerMirroredStrategy: %d workers, this is worker %d%s",
            shard.count,
            shard.index,
            " (chief)" if is_chief(strategy) else "",
        )
        return strategy
    if kind == "mirrored":  # every local GPU, else every (logical) CPU device
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
        logger.info("MirroredStrategy over %d local replicas", strategy.num_replicas_in_sync)
        return strategy
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the one worker that writes checkpoints, state and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster
