"""SIGKILL a `mtlrec train --follow` at named moments, run the same command again, compare
with an uninterrupted follow over the same hourly partitions (see test_kill_resume.py for
the fault hook)."""

import math
import signal
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from mtlrec.cli import main
from mtlrec.training.run.metrics_log import read_metrics
from mtlrec.training.run.run_state import RunState
from mtlrec.training.serving.export import latest_export, read_metadata, versions
from mtlrec.training.serving.predict import predict_file

HOURS = [f"2024-01-01T{h:02d}" for h in range(4)]
UNTIL = "dt=2024-01-01/hour=03"
OVERRIDES = {"export": {"every": 2}}


@pytest.fixture(scope="module")
def hours_root(tmp_path_factory, training):
    from mtlrec.data_pipeline import generate_funnel

    sources = tmp_path_factory.mktemp("sources") / "data"
    days = generate_funnel(sources, training.START, 4, training.ROWS, seed=7, **training.KNOBS)
    root = tmp_path_factory.mktemp("hours") / "data"
    for hour, day in enumerate(days):
        training.write_hour(root, hour, sources / f"dt={day}")
    return root


def _config(directory, root, training):
    return training.config_file(directory, root, training.merge(training.FOLLOW, OVERRIDES))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, hours_root, training):
    directory = tmp_path_factory.mktemp("clean")
    assert main(["train", str(_config(directory, hours_root, training)), "--follow", "--until", UNTIL]) == 0
    run_dir = directory / "run"
    out = directory / "scores.parquet"
    predict_file(latest_export(run_dir / "export"), hours_root / "dt=2024-01-01" / "hour=03", out)
    return run_dir, pq.read_table(out)


def _metrics(run_dir):
    """metrics.csv without the lags (wall-clock times)."""
    return [(r["day"], r["task"], r["metric"], r["step"], r["value"])
            for r in read_metrics(run_dir) if r["metric"] != "lag_seconds"]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["train.step:8", "follow.exported:1"])
def test_killed_follow_resumes_to_the_clean_result(point, tmp_path, hours_root, clean_run, cli, training, capsys):
    clean_dir, clean_scores = clean_run
    config = _config(tmp_path, hours_root, training)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--follow", "--until", UNTIL]
    killed = subprocess.run(
        command, capture_output=True, text=True, timeout=240,
        env=cli.env(MTLREC_FAULT_POINT=point), cwd=str(training.REPO),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = RunState.load(run_dir)
    if point == "train.step:8":  # killed at step 3 of hour 1: hour 0 recorded, hour 1 scored
        assert state.trained_days == HOURS[:1] and HOURS[1] in state.data["follow"]["progressive"]
    else:  # hour 1 exported, not recorded
        assert state.trained_days == HOURS[:1] and versions(run_dir / "export") == [1]

    capsys.readouterr()
    assert main(["train", str(config), "--follow", "--until", UNTIL]) == 0

    state, clean = RunState.load(run_dir), RunState.load(clean_dir)
    assert state.trained_days == clean.trained_days == HOURS  # each hour exactly once, none skipped
    assert [(e["steps"], e["examples"], e["times_trained"]) for e in state.days] == [(5, 320, 1)] * 4
    assert [e["global_step"] for e in state.days] == [e["global_step"] for e in clean.days] == [5, 10, 15, 20]
    assert [e["export_version"] for e in state.days] == [e["export_version"] for e in clean.days] == [1, 1, 2, 2]
    for mine, theirs in zip(state.days, clean.days):
        for task, values in theirs["progressive"].items():
            for name, value in values.items():
                if value is not None:
                    assert math.isclose(mine["progressive"][task][name], value, rel_tol=1e-6, abs_tol=1e-9), (task, name)
    ours, theirs = _metrics(run_dir), _metrics(clean_dir)
    assert [r[:4] for r in ours] == [r[:4] for r in theirs]
    np.testing.assert_allclose([r[4] for r in ours], [r[4] for r in theirs], rtol=1e-5, atol=1e-6)
    assert versions(run_dir / "export") == versions(clean_dir / "export") == [1, 2]
    assert [read_metadata(run_dir / "export" / str(v))["day"] for v in (1, 2)] == [HOURS[1], HOURS[3]]
    assert not list(run_dir.rglob(".tmp-*")) and state.pending is None

    scores = tmp_path / "scores.parquet"
    assert predict_file(latest_export(run_dir / "export"), hours_root / "dt=2024-01-01" / "hour=03", scores) == 320
    table = pq.read_table(scores)
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(table.column(name).to_numpy(), clean_scores.column(name).to_numpy(), atol=1e-4)
