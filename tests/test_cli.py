"""The `mtlrec` command line: every command once, exit codes and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mtlrec.cli import main

REPO = Path(__file__).resolve().parents[1]
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
ROWS = 300

CONFIG = """\
name: cli_tiny
run_dir: run
data:
  root: {root}
  funnel: [[click, conversion]]
schema:
  key: impression_id
  categorical:
    - {{name: user_id, dtype: int64, num_buckets: 64, dim: 4}}
    - {{name: item_id, dtype: int64, num_buckets: 64, dim: 4}}
    - {{name: scene, dtype: string, num_buckets: 8, dim: 4}}
  numeric:
    - {{name: price, normalize: log1p}}
  sequence:
    - {{name: hist_item_id, dtype: int64, max_len: 4, shared_with: item_id}}
  labels:
    - {{name: click, kind: binary}}
    - {{name: conversion, kind: binary}}
tasks:
  - {{name: ctr, label: click}}
  - {{name: cvr, label: conversion, sample_space: click}}
model:
  type: mmoe
  num_experts: 2
  expert_units: [8]
  tower_units: [4]
  seed: 2
training:
  batch_size: 64
  checkpoint_every: 3
  log_every: 2
evaluation:
  extras: [user_id, true_ctr, true_cvr]
export:
  keep: 2
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "data"
    code = main(
        ["generate", "--root", str(root), "--days", "3", "--start", DAYS[0], "--rows", str(ROWS),
         "--seed", "1", "--knob", "num_users=50", "--knob", "num_items=40", "--knob", "max_len=4"]
    )
    assert code == 0
    return root


def write_config(directory, root, text=CONFIG, name="exp.yaml"):
    path = Path(directory) / name
    path.write_text(text.format(root=root), encoding="utf-8")
    return path


def test_every_command_once(tmp_path, data_root, capsys):
    assert sorted(p.name for p in data_root.iterdir()) == [f"dt={d}" for d in DAYS]
    config = write_config(tmp_path, data_root)
    run_dir = tmp_path / "run"
    capsys.readouterr()

    assert main(["train", str(config), "--day", DAYS[0]]) == 0
    out, err = capsys.readouterr()
    assert f"trained {DAYS[0]}: 5 steps (global step 5), evaluated on {DAYS[1]}, export version 1" in out
    assert "examples/s" in err  # progress lines every log_every steps

    # a scheduler's retry of the finished command: exit 0, nothing written
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    assert main(["train", str(config), "--day", DAYS[0]]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == (
        "nothing to train: the days asked are already trained with this config (--force trains them again)"
    )
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    # the same day with a changed config is refused
    changed = write_config(tmp_path, data_root, CONFIG.replace("  batch_size: 64", "  batch_size: 32"), "changed.yaml")
    assert main(["train", str(changed), "--day", DAYS[0]]) == 1
    out, err = capsys.readouterr()
    assert err.strip().count("\n") == 0  # refused before any work: the error line only
    assert err.strip() == (
        f"mtlrec: error: day {DAYS[0]} is already trained in {run_dir} (global step 5) with a config "
        f"that differs from this one; pass --force to train it again"
    )
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before

    assert main(["evaluate", str(config), "--day", DAYS[2], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["metrics"]["ctr"]["auc"] <= 1.0
    assert sum(result["expert_utilization"]["cvr"]) == pytest.approx(1.0, abs=1e-4)

    assert main(["export", str(config)]) == 0  # training just exported this checkpoint
    assert capsys.readouterr().out.strip() == (
        f"nothing written: the newest export {run_dir / 'export' / '1'} already is the newest checkpoint "
        f"(global step 5); --force exports it again"
    )
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["1"]
    assert main(["export", str(config), "--force"]) == 0
    assert capsys.readouterr().out.strip() == f"exported {run_dir / 'export' / '2'}"

    scores = tmp_path / "scores.parquet"
    assert main(["predict", "--model", str(run_dir / "export" / "2"), "--input",
                 str(data_root / f"dt={DAYS[2]}"), "--output", str(scores), "--batch-size", "128"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {ROWS} rows to {scores}"
    assert pq.read_table(scores).column_names == ["impression_id", "ctr", "cvr"]

    assert main(["report", str(run_dir)]) == 0
    plots = capsys.readouterr().out.split()
    assert {Path(p).name for p in plots} == {
        "auc_by_day.png", "loss_by_day.png", "calibration.png", "expert_utilization.png"
    }
    assert all(Path(p).stat().st_size > 1000 for p in plots)

    converted = tmp_path / "converted"
    assert main(["convert", "--root", str(data_root), "--day", DAYS[2], "--to", "tfrecord",
                 "--out", str(converted), "--schema", str(config)]) == 0
    assert list((converted / f"dt={DAYS[2]}").glob("*.tfrecord"))
    capsys.readouterr()

    # predict reads the TFRecord day too, and scores it as the Parquet day
    tf_scores = tmp_path / "tf_scores.parquet"
    assert main(["predict", "--model", str(run_dir / "export" / "2"), "--input",
                 str(converted / f"dt={DAYS[2]}"), "--output", str(tf_scores)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {ROWS} rows to {tf_scores}"
    a, b = pq.read_table(scores).to_pydict(), pq.read_table(tf_scores).to_pydict()
    assert a["impression_id"] == b["impression_id"]
    for name in ("ctr", "cvr"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7)


def test_input_errors_are_one_line_with_exit_codes(tmp_path, data_root, capsys):
    config = write_config(tmp_path, data_root)
    cases = [
        (["train", str(config), "--day", "2030-01-01"], 1, "2030-01-01"),
        (["train", str(tmp_path / "missing.yaml"), "--day", DAYS[0]], 2, "missing.yaml: config file not found"),
        (["predict", "--model", str(tmp_path), "--input", str(tmp_path), "--output", str(tmp_path / "o.parquet")],
         1, "not a SavedModel directory"),
        (["report", str(tmp_path / "nothing")], 1, "no metrics to plot"),
        (["generate", "--root", str(tmp_path / "g"), "--days", "1", "--start", DAYS[0], "--rows", "10",
          "--knob", "colour=red"], 2, "colour"),
        (["generate", "--root", str(tmp_path / "g"), "--days", "1", "--start", DAYS[0], "--rows", "10",
          "--knob", "relatedness=fast"], 2, "Expected relatedness to be a number. Received: relatedness='fast'"),
        (["evaluate", str(config)], 2, "data.eval_day: no day to evaluate"),
    ]
    for args, code, text in cases:
        capsys.readouterr()
        assert main(args) == code, args
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("mtlrec: error: ") and text in err, (args, err)
    assert not (tmp_path / "run").exists()


def test_bad_config_in_a_fresh_process_exits_2_without_traceback(tmp_path, data_root):
    text = CONFIG.replace("  checkpoint_every: 3", "  checkpoint_evry: 3")
    config = write_config(tmp_path, data_root, text)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--day", DAYS[0]],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line == (
        f"mtlrec: error: {config}:30: training.checkpoint_evry: unknown key; expected one of "
        "batch_size, epochs_per_day, steps_per_day, checkpoint_every, seed, shuffle_buffer, log_every, strategy, "
        "jit_compile, mixed_precision, intra_op_threads, inter_op_threads"
    )
    assert not (tmp_path / "run").exists()


def test_a_successful_command_in_a_fresh_process_ends_with_its_output_flushed(tmp_path):
    # the console script ends a successful command with os._exit (no interpreter
    # teardown): what it printed into a pipe must still come out
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    root = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.cli", "generate", "--root", str(root), "--start", "2024-01-01", "--days", "1",
         "--rows", "50"],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == f"wrote 1 days (2024-01-01 .. 2024-01-01), 50 rows each, to {root}\n"
    assert len(pq.read_table(next((root / "dt=2024-01-01").glob("*.parquet")))) == 50


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), "--rows", "1000"]) == 0
    out, err = capsys.readouterr()
    assert "validating day" in err and "share an embedding row" not in err  # no collision warning
    assert "mtlrec demo: 2 models, trained on 2024-01-01..2024-01-02, updated on 2024-01-03" in out
    for model, outputs in (("esmm", ("ctr", "cvr", "ctcvr")), ("mmoe", ("ctr", "cvr"))):
        run = workdir / "runs" / model
        state = json.loads((run / "state.json").read_text())
        assert [d["day"] for d in state["days"]] == DAYS
        assert f"{run / 'export' / '3'}" in out
        assert (run / "export" / "3" / "saved_model.pb").exists()
        assert (run / "plots" / "auc_by_day.png").exists()
        for output in outputs:
            rows = [line.split() for line in out.splitlines()]
            assert any(r[:2] == [model, output] or r[:1] == [output] for r in rows), output
    assert (workdir / "runs" / "mmoe" / "plots" / "expert_utilization.png").exists()
    # a directory the demo did not create is never cleared
    other = tmp_path / "not_a_demo"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["demo", "--workdir", str(other)]) == 1
    assert (other / "keep.txt").read_text() == "mine"


def test_knob_values_read_numbers_as_yaml_1_2_writes_them():
    from mtlrec.cli import _knob

    assert _knob("relatedness=8e-1") == ("relatedness", 0.8)
    assert _knob("num_users=2E3") == ("num_users", 2000.0)
    assert _knob("scale=.5") == ("scale", 0.5)
    assert _knob("mode=fast") == ("mode", "fast")


NEW_MODELS = {
    "aitm": (
        "  - {{name: ctr, label: click}}\n  - {{name: ctcvr, label: conversion}}\n",
        "  type: aitm\n  tower_units: [4]\n  lambda: 0.6\n  seed: 2\n",
        "loss_weighting: {{type: fixed}}\n",
        ["ctr", "ctcvr"],
    ),
    "escm2_dr": (
        "  - {{name: ctr, label: click}}\n  - {{name: cvr, label: conversion, parent: ctr, joint: ctcvr}}\n",
        "  type: escm2\n  variant: dr\n  tower_units: [4]\n  seed: 2\n",
        "loss_weighting: {{type: fixed}}\n",
        ["ctr", "cvr", "ctcvr"],
    ),
    "mmoe_dselect_k_metabalance": (
        "  - {{name: ctr, label: click}}\n  - {{name: cvr, label: conversion, sample_space: click}}\n",
        "  type: mmoe\n  num_experts: 4\n  expert_units: [4]\n  tower_units: []\n"
        "  gate: {{type: dselect_k, k: 2}}\n  seed: 2\n",
        "loss_weighting: {{type: metabalance, target: cvr}}\n",
        ["ctr", "cvr"],
    ),
}


@pytest.mark.parametrize("case", sorted(NEW_MODELS))
def test_new_models_train_evaluate_export_predict(tmp_path, data_root, capsys, case):
    tasks, model, weighting, outputs = NEW_MODELS[case]
    text = CONFIG.replace(
        "  - {{name: ctr, label: click}}\n  - {{name: cvr, label: conversion, sample_space: click}}\n", tasks
    )
    text = text.replace(
        "  type: mmoe\n  num_experts: 2\n  expert_units: [8]\n  tower_units: [4]\n  seed: 2\n",
        model,
    )
    text = text.replace("training:\n", weighting + "training:\n")
    config = write_config(tmp_path, data_root, text)
    run_dir = tmp_path / "run"
    capsys.readouterr()

    assert main(["train", str(config), "--day", DAYS[0]]) == 0
    assert f"trained {DAYS[0]}: 5 steps" in capsys.readouterr().out
    assert main(["evaluate", str(config), "--day", DAYS[1], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for task in outputs[:2]:
        assert 0.0 <= result["metrics"][task]["auc"] <= 1.0
    if case.startswith("mmoe"):
        assert len(result["expert_utilization"]["cvr"]) == 4
    assert main(["export", str(config), "--force"]) == 0  # training exported version 1
    export = run_dir / "export" / "2"
    assert capsys.readouterr().out.strip() == f"exported {export}"
    scores = tmp_path / "scores.parquet"
    assert main(["predict", "--model", str(export), "--input", str(data_root / f"dt={DAYS[2]}"),
                 "--output", str(scores)]) == 0
    table = pq.read_table(scores)
    assert table.column_names[0] == "impression_id"
    assert sorted(table.column_names[1:]) == sorted(outputs)  # not the logits, not the DR imputation
    assert table.num_rows == ROWS
