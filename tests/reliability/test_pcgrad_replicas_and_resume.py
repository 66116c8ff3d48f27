"""PCGrad under `mtlrec train`: two mirrored replicas train the model of one device, and a run
SIGKILLed mid-day and resumed trains the model of an uninterrupted one.

Three tasks (a funnel CTR -> CVR and `follow`) on PLE, so that the projection order matters
(with two tasks each task has one other to visit) and the CTR tower, which the CTCVR loss
reaches too, is projected.
"""

import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from mtlrec.cli import main
from mtlrec.training.config import load_config
from mtlrec.training.experiment import Experiment
from mtlrec.training.run.run_state import RunState

DAY = "2024-01-01"  # 320 rows, batch 64: 5 steps, checkpoints at steps 2 and 4
# weights after 5 Adam steps: runs that compute the same differ only by the order of float sums
ATOL = 1e-5


def _overrides(training):
    schema = dict(training.SCHEMA, labels=training.SCHEMA["labels"] + [{"name": "follow", "kind": "binary"}])
    return {
        "schema": schema,
        "tasks": [
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
            {"name": "follow", "label": "follow"},
        ],
        "model": {"type": "ple", "expert_units": [4], "tower_units": [4], "seed": 2},
        "loss_weighting": {"type": "pcgrad", "seed": 0},
    }


def _weights(run_dir):
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    return {w.path: np.asarray(w) for w in model.weights}


def _worst(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, funnel_root, training):
    """The day trained uninterrupted, in this process, on one device."""
    directory = tmp_path_factory.mktemp("clean")
    Experiment(load_config(training.config_file(directory, funnel_root, _overrides(training)))).train(day=DAY)
    return directory / "run"


MIRRORED = """
import sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mtlrec.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_mirrored_replicas_project_the_gradients_of_one_device(tmp_path, funnel_root, training, cli, clean_run):
    overrides = _overrides(training)
    overrides["training"] = {"strategy": "mirrored"}
    config = training.config_file(tmp_path, funnel_root, overrides)
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, "train", str(config), "--day", DAY],
        capture_output=True, text=True, timeout=300, env=cli.env(), cwd=str(training.REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy over 2 local replicas" in proc.stderr
    assert [(e["steps"], e["examples"]) for e in RunState.load(tmp_path / "run").days] == [(5, 320)]
    worst = _worst(_weights(tmp_path / "run"), _weights(clean_run))
    print(f"PCGrad, 2 mirrored replicas vs one device: max |weight difference| = {worst:.2e}")
    assert worst <= ATOL, worst


@pytest.mark.slow
def test_a_run_killed_mid_day_resumes_to_the_uninterrupted_model(tmp_path, funnel_root, training, cli, clean_run, capsys):
    config = training.config_file(tmp_path, funnel_root, _overrides(training))
    command = [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--day", DAY]
    killed = subprocess.run(  # SIGKILLed after step 3: the newest checkpoint is step 2's
        command, capture_output=True, text=True, timeout=300,
        env=cli.env(MTLREC_FAULT_POINT="train.step:3"), cwd=str(training.REPO),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    capsys.readouterr()
    assert main(["train", str(config), "--day", DAY]) == 0
    err = capsys.readouterr().err
    assert "resuming the interrupted command" in err and "global step 2" in err, err[-2000:]
    state, clean = RunState.load(tmp_path / "run"), RunState.load(clean_run)
    assert [(e["steps"], e["examples"], e["global_step"]) for e in state.days] == [(5, 320, 5)]
    assert state.global_step == clean.global_step == 5
    worst = _worst(_weights(tmp_path / "run"), _weights(clean_run))
    print(f"PCGrad, killed at step 3 and resumed vs uninterrupted: max |weight difference| = {worst:.2e}")
    assert worst <= 1e-6, worst
