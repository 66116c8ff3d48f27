"""Faults other than a kill: a NaN loss mid-day, a full disk, a failing export write."""

import errno
import json
import resource
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from mtlrec.cli import main
from mtlrec.training.serving.export import latest_export, versions
from mtlrec.training.serving.predict import predict_file
from mtlrec.training.run.run_state import RunState

DAY1, DAY2, DAY3 = "2024-01-01", "2024-01-02", "2024-01-03"


@pytest.fixture
def day1_run(tmp_path, funnel_root, training, capsys):
    """(config, run_dir, data root) with day 1 trained by the CLI (a private copy of the data)."""
    root = tmp_path / "data"
    shutil.copytree(funnel_root, root)
    config = training.config_file(tmp_path, root)
    assert main(["train", str(config), "--day", DAY1]) == 0
    capsys.readouterr()
    return config, tmp_path / "run", root


def _files(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _assert_day1_intact(run_dir, root, before_ckpt, before_export, tmp_path):
    """The day-1 checkpoint and export are byte for byte what they were, and they load."""
    assert _files(run_dir / "checkpoints" / before_ckpt) == before_export["ckpt"]
    assert versions(run_dir / "export") == [1]
    assert _files(run_dir / "export" / "1") == before_export["export"]
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / before_ckpt / "ckpt"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.isfinite(value).all(), name
    out = tmp_path / "scores.parquet"
    assert predict_file(run_dir / "export" / "1", root / f"dt={DAY3}", out) == 320
    assert np.isfinite(pq.read_table(out).column("ctr").to_numpy()).all()
    assert not list(run_dir.rglob(".tmp-*"))


def _day1_files(run_dir):
    ckpt = sorted((run_dir / "checkpoints").glob("ckpt-*"))[-1].name
    return ckpt, {"ckpt": _files(run_dir / "checkpoints" / ckpt), "export": _files(run_dir / "export" / "1")}


def test_nan_loss_mid_day_stops_the_day_and_exports_nothing(day1_run, tmp_path, capsys):
    config, run_dir, root = day1_run
    path = next((root / f"dt={DAY2}").glob("*.parquet"))
    table = pq.read_table(path)
    values = table.column("item_hist_ctr").to_numpy().copy()
    values[200:] = 1e38  # finite in the file (validation passes), infinite once standardised
    i = table.column_names.index("item_hist_ctr")
    pq.write_table(table.set_column(i, "item_hist_ctr", pa.array(values, pa.float64())), path)
    ckpt, before = _day1_files(run_dir)

    assert main(["train", str(config), "--day", DAY2]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"mtlrec: error: non-finite loss on day {DAY2} at step ")
    assert "nothing was exported" in line
    step = int(line.split(" at step ")[1].split()[0])
    assert 1 <= step <= 5
    _assert_day1_intact(run_dir, root, ckpt, before, tmp_path)
    state = RunState.load(run_dir)
    assert state.trained_days == [DAY1] and state.global_step == 5
    # any checkpoint taken in day 2 is from before the bad step, with finite weights
    for meta_path in (run_dir / "checkpoints").glob("ckpt-*/meta.json"):
        meta = json.loads(meta_path.read_text())
        if meta["day"] == DAY2:
            assert meta["steps"] < step and not meta["completed"]


def _limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # python ignores SIGXFSZ: EFBIG

    return apply


@pytest.mark.slow
def test_a_full_disk_is_one_clear_error_and_the_last_good_state_loads(day1_run, tmp_path, cli, training):
    config, run_dir, root = day1_run
    ckpt, before = _day1_files(run_dir)
    sizes = sorted(p.stat().st_size for p in (run_dir / "checkpoints" / ckpt).iterdir())
    limit = sizes[-1] // 2  # the state and config files fit, a checkpoint's data file does not
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--day", DAY2],
        capture_output=True, text=True, timeout=240, env=cli.env(), cwd=str(training.REPO),
        preexec_fn=_limit_file_size(limit),
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"mtlrec: error: {run_dir}: could not write a checkpoint (day {DAY2}, step 2 of the day)")
    assert "File too large" in line and "is the disk full or the run directory not writable?" in line
    assert f"the last good checkpoint ({ckpt}) and export (version 1)" in line
    _assert_day1_intact(run_dir, root, ckpt, before, tmp_path)
    assert RunState.load(run_dir).trained_days == [DAY1]

    # with room again, the same command finishes the day (here, in this process)
    assert main(["train", str(config), "--day", DAY2]) == 0
    assert RunState.load(run_dir).trained_days == [DAY1, DAY2] and versions(run_dir / "export") == [1, 2]


def test_a_failing_export_write_keeps_the_last_export_and_the_day_resumes(day1_run, tmp_path, monkeypatch, capsys):
    import keras

    config, run_dir, root = day1_run
    ckpt, before = _day1_files(run_dir)
    archive_class = type(keras.export.ExportArchive())  # the backend's class behind the factory
    real = archive_class.write_out

    def no_space(self, filepath, *args, **kwargs):
        real(self, filepath, *args, **kwargs)  # half the files are there when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device", filepath)

    monkeypatch.setattr(archive_class, "write_out", no_space)
    assert main(["train", str(config), "--day", DAY2]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"mtlrec: error: {run_dir}: could not write the export of day {DAY2}")
    assert "No space left on device" in line and "export (version 1)" in line
    assert versions(run_dir / "export") == [1] and _files(run_dir / "export" / "1") == before["export"]
    assert not list((run_dir / "export").glob(".tmp-*"))
    assert RunState.load(run_dir).trained_days == [DAY1]

    monkeypatch.setattr(archive_class, "write_out", real)
    assert main(["train", str(config), "--day", DAY2]) == 0  # trained already: exports, records
    err = capsys.readouterr().err
    state = RunState.load(run_dir)
    assert state.trained_days == [DAY1, DAY2] and state.entry(DAY2)["steps"] == 5
    assert versions(run_dir / "export") == [1, 2] and latest_export(run_dir / "export").name == "2"
    assert "resuming" in err
