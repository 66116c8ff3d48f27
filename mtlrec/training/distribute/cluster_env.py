"""What ``TF_CONFIG`` says about this process: the cluster, and whether it is the chief.

Plain JSON reading, no TensorFlow: the run directory asks it before any strategy exists.
"""

from __future__ import annotations

import json
import os


def cluster_from_env() -> dict:
    """The ``cluster`` of ``TF_CONFIG`` (empty without one)."""
    tf_config = os.environ.get("TF_CONFIG")
    if not tf_config:
        return {}
    try:
        cluster = json.loads(tf_config).get("cluster") or {}
    except (ValueError, AttributeError) as err:
        raise ValueError(f"TF_CONFIG: expected a JSON object with a cluster ({err})") from None
    return cluster


def is_chief_from_env() -> bool:
    """Whether this process is the chief according to ``TF_CONFIG`` (True without one)."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return True
    cluster, task = tf_config.get("cluster") or {}, tf_config.get("task") or {}
    if not cluster or not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in cluster
