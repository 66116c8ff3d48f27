"""The end-of-day checkpoint, written in a thread while model.keras and the export are made."""

import errno
import json
import threading

import pytest

from mtlrec.cli import main
from mtlrec.training.run.background_write import BackgroundWrite
from mtlrec.training.run.checkpoints import CheckpointManager
from mtlrec.training.run.run_state import RunState
from mtlrec.training.serving.export import versions


def test_background_write_hands_back_its_result_and_its_error():
    assert BackgroundWrite(lambda a, b: a + b, 2, 3).wait() == 5

    def fails():
        raise OSError(errno.ENOSPC, "No space left on device")

    write = BackgroundWrite(fails)
    with pytest.raises(OSError, match="No space left on device"):
        write.wait()
    assert write.wait() is None  # raised once


def test_a_failed_end_of_day_checkpoint_records_nothing_and_the_same_command_finishes(
    write_config, tiny, monkeypatch, capsys
):
    config = write_config({"training": {"checkpoint_every": 100}})  # no mid-day checkpoint
    run_dir = config.parent / "run"
    real = CheckpointManager.save
    threads = []

    def no_space(self, meta):
        threads.append(threading.current_thread().name)
        if meta["completed"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))
        return real(self, meta)

    monkeypatch.setattr(CheckpointManager, "save", no_space)
    assert main(["train", str(config), "--day", tiny.days[0]]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"mtlrec: error: {run_dir}: could not write a checkpoint (day {tiny.days[0]}, step")
    assert "No space left on device" in line
    assert threads == ["mtlrec-checkpoint"]  # the end-of-day checkpoint, off the main thread
    # the export was made meanwhile, but the day is not recorded: no checkpoint has it
    assert versions(run_dir / "export") == [1]
    assert not list((run_dir / "checkpoints").glob("ckpt-*"))
    assert RunState.load(run_dir).trained_days == []

    monkeypatch.setattr(CheckpointManager, "save", real)
    assert main(["train", str(config), "--day", tiny.days[0]]) == 0
    state = RunState.load(run_dir)
    assert state.trained_days == [tiny.days[0]] and state.entry(tiny.days[0])["steps"] == tiny.steps_per_day
    assert state.entry(tiny.days[0])["export_version"] == 2
    (ckpt,) = (run_dir / "checkpoints").glob("ckpt-*")
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["completed"] and meta["global_step"] == tiny.steps_per_day
    assert not list(run_dir.rglob(".tmp-*"))
