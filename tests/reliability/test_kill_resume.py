"""SIGKILL a `mtlrec train` at named moments, run the same command again, compare with a clean run.

The kill comes from the test-only hook ``MTLREC_FAULT_POINT`` (mtlrec/training/faults.py):
the process SIGKILLs itself the N-th time it reaches the named point, so each moment is hit
exactly, not by timing luck. (``_inspect_kill`` also knows ``train.step:3``, a kill between
two mid-day checkpoints; the suite covers that moment in tests/training/test_resume.py.)
"""

import json
import signal
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from mtlrec.cli import main
from mtlrec.training.config import load_config
from mtlrec.training.experiment import Experiment
from mtlrec.training.serving.export import latest_export, versions
from mtlrec.training.serving.predict import predict_file
from mtlrec.training.run.run_state import RunState

DAYS = ["2024-01-01", "2024-01-02"]  # the first two days of the `funnel_root` fixture
EVAL_DAY = "2024-01-03"
COMMAND_DAYS = f"{DAYS[0]}:{DAYS[1]}"
STEPS = 5  # 320 rows / batch 64 per day; checkpoint_every 2 -> mid-day checkpoints at 2 and 4


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, funnel_root, training):
    """The same command, uninterrupted (in this process): (run_dir, predictions on day 3)."""
    directory = tmp_path_factory.mktemp("clean")
    config = training.config_file(directory, funnel_root)
    Experiment(load_config(config)).train(days=COMMAND_DAYS)
    run_dir = directory / "run"
    out = directory / "scores.parquet"
    predict_file(latest_export(run_dir / "export"), funnel_root / f"dt={EVAL_DAY}", out)
    return run_dir, pq.read_table(out)


def _inspect_kill(point, run_dir):
    """What the run directory must show right after the kill at ``point``."""
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt-*"))
    if point == "train.step:3":  # killed at step 3 of day 1: the newest checkpoint is step 2
        meta = json.loads((ckpts[-1] / "meta.json").read_text())
        assert (meta["day"], meta["steps"], meta["completed"]) == (DAYS[0], 2, False)
    elif point == "checkpoint.write:2":  # the step-4 checkpoint half written, step 2 is the newest
        assert list((run_dir / "checkpoints").glob(".tmp-ckpt-*"))
        meta = json.loads((ckpts[-1] / "meta.json").read_text())
        assert (meta["day"], meta["steps"]) == (DAYS[0], 2)
    elif point == "export.write:1":  # day 1 fully trained, its export half written
        assert list((run_dir / "export").glob(".tmp-1.*"))
        assert versions(run_dir / "export") == []
        assert RunState.load(run_dir).trained_days == []
    elif point == "day.done:1":  # day 1 recorded, day 2 not started
        state = RunState.load(run_dir)
        assert state.trained_days == [DAYS[0]] and state.pending["done"] == [DAYS[0]]
    state = RunState.load(run_dir)
    assert state.pending is not None and state.pending["days"] == DAYS


@pytest.mark.slow
@pytest.mark.parametrize(
    # a kill mid-day between two checkpoints ("train.step:3" here) is the case of
    # tests/training/test_resume.py, which kills from outside on seeing a mid-day checkpoint
    "point", ["checkpoint.write:2", "export.write:1", "day.done:1"]
)
def test_killed_run_resumes_to_the_clean_result(point, tmp_path, funnel_root, clean_run, cli, training, capsys):
    clean_dir, clean_scores = clean_run
    config = training.config_file(tmp_path, funnel_root)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--days", COMMAND_DAYS]
    killed = subprocess.run(
        command, capture_output=True, text=True, timeout=240,
        env=cli.env(MTLREC_FAULT_POINT=point), cwd=str(training.REPO),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    _inspect_kill(point, run_dir)

    # the same command again (in this process: the killed one paid for a fresh interpreter)
    capsys.readouterr()
    code = main(["train", str(config), "--days", COMMAND_DAYS])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    assert "resuming the interrupted command" in err

    state, clean = RunState.load(run_dir), RunState.load(clean_dir)
    assert [e["day"] for e in state.days] == DAYS  # each day exactly once
    assert [(e["steps"], e["examples"], e["times_trained"]) for e in state.days] == [(STEPS, 320, 1)] * 2
    assert state.global_step == clean.global_step == 2 * STEPS
    assert [e["global_step"] for e in state.days] == [e["global_step"] for e in clean.days]
    assert state.pending is None
    assert versions(run_dir / "export") == versions(clean_dir / "export") == [1, 2]
    assert not list(run_dir.rglob(".tmp-*"))

    # a scheduler retrying until exit 0 is done now: the same command exits 0, writes nothing
    state_text = (run_dir / "state.json").read_text()
    assert main(["train", str(config), "--days", COMMAND_DAYS]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert (run_dir / "state.json").read_text() == state_text and versions(run_dir / "export") == [1, 2]

    # the latest export loads and predicts what the uninterrupted run's export predicts
    scores = tmp_path / "scores.parquet"
    assert predict_file(latest_export(run_dir / "export"), funnel_root / f"dt={EVAL_DAY}", scores) == 320
    table = pq.read_table(scores)
    for name in ("ctr", "cvr", "ctcvr"):
        a, b = table.column(name).to_numpy(), clean_scores.column(name).to_numpy()
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=name)
