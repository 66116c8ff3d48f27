import json
import math
import signal
import sys

import pytest

from mtlrec.training.config import load_config
from mtlrec.training.experiment import Experiment
from mtlrec.training.serving.export import latest_export, versions
from mtlrec.training.run.run_state import RunState

ROWS = 4000
BATCH = 32
DAYS = ["2024-02-01", "2024-02-02"]


def _summary(run_dir):
    state = RunState.load(run_dir)
    return state.global_step, [(e["day"], e["steps"], e["examples"], e["times_trained"]) for e in state.days]


@pytest.mark.slow
def test_a_run_killed_mid_day_resumes_to_the_state_of_an_uninterrupted_run(tmp_path, make_config, cli, cli_in_process,
                                                                           kill_mid_day):
    from mtlrec.data_pipeline import generate_funnel

    root = tmp_path / "data"
    generate_funnel(root, DAYS[0], 2, ROWS, seed=4, num_users=60, num_items=50, max_len=4)
    overrides = {"training": {"batch_size": BATCH, "checkpoint_every": 10, "log_every": 100}}
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    killed_dir.mkdir()
    clean_dir.mkdir()
    config = make_config(killed_dir, root, overrides)
    run_dir = killed_dir / "run"
    command = [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--days", f"{DAYS[0]}:{DAYS[1]}"]

    meta, returncode = kill_mid_day(command, run_dir, cli.env())
    assert meta is not None, "no mid-day checkpoint appeared before the run ended"
    assert returncode == -signal.SIGKILL
    state = RunState.load(run_dir)
    assert state.pending is not None  # the command did not finish

    # the same command again (in this process: the killed one paid for a fresh interpreter)
    code, out, err = cli_in_process("train", config, "--days", f"{DAYS[0]}:{DAYS[1]}")
    assert code == 0, err[-2000:]
    assert "resuming day" in err

    Experiment(load_config(make_config(clean_dir, root, overrides))).train(days=f"{DAYS[0]}:{DAYS[1]}")

    steps = math.ceil(ROWS / BATCH)
    expected = (2 * steps, [(DAYS[0], steps, ROWS, 1), (DAYS[1], steps, ROWS, 1)])
    assert _summary(run_dir) == _summary(clean_dir / "run") == expected
    assert RunState.load(run_dir).pending is None
    assert versions(run_dir / "export")  # the latest export is complete and loads
    import tensorflow as tf

    assert "serving_default" in tf.saved_model.load(str(latest_export(run_dir / "export"))).signatures
    assert not list(run_dir.rglob(".tmp-*"))
    # the resumed run saw exactly the same batches in the same order: the same weights
    import keras
    import numpy as np

    from mtlrec.data_pipeline import make_dataset

    resumed = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    clean = keras.saving.load_model(clean_dir / "run" / "checkpoints" / "model.keras", safe_mode=True)
    schema = json.loads((run_dir / "schema.json").read_text())
    features, _ = next(iter(make_dataset(root, [DAYS[1]], schema, batch_size=256)))
    a, b = resumed(features), clean(features)
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), atol=1e-4, err_msg=name)
