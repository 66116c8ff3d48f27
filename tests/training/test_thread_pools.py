"""`training.intra_op_threads` / `training.inter_op_threads`: what `auto` picks, the one-line
errors, and that the pools cannot change under a TensorFlow that already runs."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from mtlrec.cli import main
from mtlrec.conventions.key_paths import KeyPathError
from mtlrec.training.config import load_config
from mtlrec.training.errors import ConfigError
from mtlrec.training.thread_pools import apply_thread_pools, thread_pools

REPO = Path(__file__).resolve().parents[2]
DAY = "2024-01-01"

CONFIG = """\
name: threads
run_dir: {run_dir}
data: {{root: {root}}}
schema:
  categorical:
    - {{name: user_id, dtype: int64, num_buckets: 64, dim: 4}}
    - {{name: item_id, dtype: int64, num_buckets: 64, dim: 4}}
  numeric:
    - {{name: price, normalize: log1p}}
  labels:
    - {{name: click, kind: binary}}
    - {{name: conversion, kind: binary}}
tasks:
  - {{name: ctr, label: click}}
  - {{name: cvr, label: conversion, sample_space: click}}
model: {{type: ple, num_levels: 2, num_task_experts: 1, num_shared_experts: 2, expert_units: [16, 8],
         tower_units: [4], seed: 3}}
training: {{batch_size: 64, seed: 5{threads}}}
"""


def training(intra="auto", inter="auto"):
    return SimpleNamespace(intra_op_threads=intra, inter_op_threads=inter)


@pytest.mark.parametrize("cores, intra", [(1, 1), (2, 1), (3, 0), (16, 0)])
def test_auto_runs_each_op_on_one_thread_on_up_to_two_cores(cores, intra):
    assert thread_pools(training(), cores=cores) == {"intra_op_threads": intra, "inter_op_threads": 0}


def test_numbers_are_taken_as_written():
    assert thread_pools(training(4, 3), cores=2) == {"intra_op_threads": 4, "inter_op_threads": 3}
    assert thread_pools(training(0, "auto"), cores=2) == {"intra_op_threads": 0, "inter_op_threads": 0}


@pytest.mark.parametrize("value, shown", [("-1", "-1"), ("many", "'many'"), ("1.5", "1.5"), ("true", "True")])
def test_a_bad_value_names_its_key(tmp_path, value, shown):
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.format(run_dir=tmp_path / "run", root=tmp_path, threads=f", inter_op_threads: {value}"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).endswith(
        "training.inter_op_threads: expected auto or a non-negative integer (0: TensorFlow's default, "
        f"one thread per core), got {shown}"
    )


def test_pools_are_kept_once_tensorflow_runs():
    # conftest started TensorFlow with its default pools
    before = (tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads())
    assert before == (0, 0)
    apply_thread_pools(training())  # auto: left as they are, whatever the cores
    apply_thread_pools(training(0, 0))  # what they are already
    with pytest.raises(KeyPathError) as err:
        apply_thread_pools(training(3, "auto"))
    assert str(err.value) == (
        "training.intra_op_threads: 3 cannot apply: TensorFlow already runs in this process with its "
        "default of one thread per core; set it before TensorFlow runs anything (the mtlrec commands do), "
        "or leave it at auto"
    )
    after = (tf.config.threading.get_intra_op_parallelism_threads(),
             tf.config.threading.get_inter_op_parallelism_threads())
    assert after == before


def _train_in_a_fresh_process(tmp_path, root, name, threads):
    run_dir = tmp_path / name
    config = tmp_path / f"{name}.yaml"
    config.write_text(CONFIG.format(run_dir=run_dir, root=root, threads=threads))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--day", DAY],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (index,) = (run_dir / "checkpoints").glob("ckpt-*/ckpt.index")
    reader = tf.train.load_checkpoint(str(index.with_suffix("")))
    weights = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
               if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    return proc.stderr, weights


def test_one_thread_per_op_trains_the_same_model_twice(tmp_path):
    """Two fresh `mtlrec train` processes with one thread per op and two ops at once: the
    pools are set (and said so), and the same seed gives the same weights, bit for bit."""
    root = tmp_path / "data"
    assert main(["generate", "--root", str(root), "--days", "1", "--start", DAY, "--rows", "640",
                 "--seed", "1", "--knob", "num_users=50", "--knob", "num_items=40"]) == 0
    threads = ", intra_op_threads: 1, inter_op_threads: 2"
    log_a, first = _train_in_a_fresh_process(tmp_path, root, "a", threads)
    log_b, second = _train_in_a_fresh_process(tmp_path, root, "b", threads)
    for log in (log_a, log_b):
        assert "TensorFlow thread pools: 1 intra-op, 2 inter-op (" in log
    assert sorted(first) == sorted(second) and len(first) > 20
    for name, value in first.items():
        assert value.dtype == second[name].dtype
        np.testing.assert_array_equal(value, second[name], err_msg=name)
