"""`training.intra_op_threads` and `training.inter_op_threads`: TensorFlow's two thread pools
in a training process.

TensorFlow's default gives each pool one thread per core: independent ops (the experts of a
level, the towers, the tables' updates) run side by side on the inter-op pool, and each op
may split its work over the intra-op pool too. On a machine of two cores both pools want both
cores at once. There one thread per op is faster (MMoE, ESMM and PLE steps 1.2x faster on
2 cores; docs/results/throughput.md), since the graphs of these models are wide enough to keep
both cores busy with whole ops, so ``auto`` picks it there. Larger machines keep TensorFlow's
default: one thread per op was not measured on them, and a wide matmul would leave cores idle.

The pools can only be set before TensorFlow runs its first op in the process. mtlrec's
commands set them before anything runs; an `Experiment` made in a process where TensorFlow
already ran keeps the pools it has (``auto``) or stops with the key (a number that differs).
"""

from __future__ import annotations

import logging
import os

import tensorflow as tf

from mtlrec.conventions.key_paths import KeyPathError

logger = logging.getLogger(__name__)

AUTO = "auto"

#: machines of up to this many cores run each op on one thread under ``auto``
ONE_THREAD_PER_OP_CORES = 2

_POOLS = (
    ("intra_op_threads", tf.config.threading.get_intra_op_parallelism_threads,
     tf.config.threading.set_intra_op_parallelism_threads),
    ("inter_op_threads", tf.config.threading.get_inter_op_parallelism_threads,
     tf.config.threading.set_inter_op_parallelism_threads),
)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_pools(training, cores: int | None = None) -> dict:
    """``{"intra_op_threads": n, "inter_op_threads": n}`` for the training section, 0 meaning
    TensorFlow's default (one thread per core)."""
    cores = available_cores() if cores is None else cores
    chosen = {}
    for key, _, _ in _POOLS:
        value = getattr(training, key, AUTO)
        if value == AUTO:
            value = 1 if key == "intra_op_threads" and cores <= ONE_THREAD_PER_OP_CORES else 0
        chosen[key] = value
    return chosen


def apply_thread_pools(training) -> None:
    """Sets TensorFlow's pools to `thread_pools(training)` unless they are so already.

    KeyPathError on the key when TensorFlow has already run in this process with other pools
    and the config asks for a number; with ``auto`` the pools are left as they are."""
    wanted = thread_pools(training)
    current = {key: get() for key, get, _ in _POOLS}
    if wanted == current:
        return
    try:
        for key, _, set_pool in _POOLS:
            set_pool(wanted[key])
    except RuntimeError:  # TensorFlow has started: its pools are fixed
        for key, _, _ in _POOLS:
            if getattr(training, key, AUTO) != AUTO and wanted[key] != current[key]:
                raise KeyPathError(
                    f"training.{key}", f"{wanted[key]} cannot apply: TensorFlow already runs in this "
                    f"process with {current[key] or 'its default of one thread per core'}; set it before "
                    "TensorFlow runs anything (the mtlrec commands do), or leave it at auto"
                ) from None
        logger.debug("TensorFlow already runs: its thread pools are kept (%s)", current)
        return
    logger.info(
        "TensorFlow thread pools: %s intra-op, %s inter-op (%d cores)",
        *(wanted[key] or "default" for key, _, _ in _POOLS), available_cores(),
    )
