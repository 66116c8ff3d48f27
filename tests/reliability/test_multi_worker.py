"""`mtlrec train` under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train one
day; the model equals a single-process run with the same global batch, and only the chief writes."""

import json
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from mtlrec.training.config import load_config
from mtlrec.training.experiment import Experiment
from mtlrec.training.serving.export import versions
from mtlrec.training.run.run_state import RunState

DAY = "2024-01-01"
# weights after 5 steps of Adam: the two runs differ only by the order of float sums
ATOL = 1e-5


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _files(run_dir):
    """Relative paths of a run directory (TensorBoard event names carry host and pid)."""
    out = set()
    for path in run_dir.rglob("*"):
        if path.is_file():
            rel = str(path.relative_to(run_dir))
            out.add("tensorboard/events" if rel.startswith("tensorboard/") else rel)
    return out


def _weights(run_dir):
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    return {w.path: np.asarray(w) for w in model.weights}


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, funnel_root, training):
    """The day trained by one process on one device (the reference of both tests)."""
    directory = tmp_path_factory.mktemp("single")
    Experiment(load_config(training.config_file(directory, funnel_root))).train(day=DAY)
    return directory / "run"


@pytest.mark.slow
def test_two_workers_train_the_model_of_one_process(tmp_path, funnel_root, training, cli, single_run):
    multi_dir = tmp_path / "multi"
    multi_dir.mkdir()
    config = training.config_file(multi_dir, funnel_root)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--day", DAY],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli.env(TF_CONFIG=tf_config), cwd=str(training.REPO),
        ))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert "MultiWorkerMirroredStrategy: 2 workers" in outputs[0][1]
    assert "sharded by record" in outputs[0][1]

    multi_run = multi_dir / "run"
    state = RunState.load(multi_run)
    assert [(e["day"], e["steps"], e["examples"]) for e in state.days] == [(DAY, 5, 320)]
    assert state.global_step == RunState.load(single_run).global_step == 5
    assert versions(multi_run / "export") == [1]  # exactly one export: the chief's
    assert _files(multi_run) == _files(single_run)  # the worker wrote nothing of its own
    multi, single = _weights(multi_run), _weights(single_run)
    assert multi.keys() == single.keys()
    worst = max(float(np.max(np.abs(multi[k] - single[k]))) for k in multi)
    print(f"two workers vs one process: max |weight difference| = {worst:.2e}")
    assert worst <= ATOL, worst
    # and training did move the weights (the comparison is not of two untouched inits)
    init = Experiment(load_config(training.config_file(tmp_path, funnel_root)))
    from mtlrec.training.trainer import Trainer

    fresh = Trainer(init.config, json.loads((single_run / "schema.json").read_text()))
    moved = {w.path: np.asarray(w) for w in fresh.model.weights}
    assert max(float(np.max(np.abs(moved[k] - single[k]))) for k in single if k in moved) > 1e-3


MIRRORED = """
import sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mtlrec.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_mirrored_strategy_over_two_local_devices_trains_the_model_of_one_device(
    tmp_path, funnel_root, training, cli, single_run
):
    """``training.strategy: mirrored`` with two logical CPU devices: each step's global batch
    is split over two replicas; lazy Adam gets their IndexedSlices gradients summed."""
    mirrored_dir = tmp_path / "mirrored"
    mirrored_dir.mkdir()
    config = training.config_file(mirrored_dir, funnel_root, {"training": {"strategy": "mirrored"}})
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, "train", str(config), "--day", DAY],
        capture_output=True, text=True, timeout=300, env=cli.env(), cwd=str(training.REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy over 2 local replicas" in proc.stderr
    state = RunState.load(mirrored_dir / "run")
    assert [(e["day"], e["steps"], e["examples"]) for e in state.days] == [(DAY, 5, 320)]
    mirrored, single = _weights(mirrored_dir / "run"), _weights(single_run)
    worst = max(float(np.max(np.abs(mirrored[k] - single[k]))) for k in single)
    print(f"mirrored (2 replicas) vs one device: max |weight difference| = {worst:.2e}")
    assert worst <= ATOL, worst
