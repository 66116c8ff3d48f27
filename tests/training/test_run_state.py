import json

import pytest

from mtlrec.training.errors import RunError
from mtlrec.training.run.run_state import RunState


def test_fresh_state_records_days_once_and_round_trips(tmp_path):
    state = RunState.load(tmp_path)
    assert state.trained_days == [] and state.pending is None and state.global_step == 0
    pending = state.begin(["2024-01-02", "2024-01-03"], force=False)
    state.record_day("2024-01-02", steps=7, examples=400, global_step=7)
    state.mark_done("2024-01-02")
    state.save()

    again = RunState.load(tmp_path)
    assert again.trained_days == ["2024-01-02"]
    assert again.entry("2024-01-02")["steps"] == 7
    assert again.global_step == 7
    assert again.pending["id"] == pending["id"]
    assert again.pending["done"] == ["2024-01-02"]
    # the same day list resumes the same command, another list starts a new one
    assert again.matches_pending(["2024-01-02", "2024-01-03"])
    assert again.begin(["2024-01-02", "2024-01-03"], force=False)["id"] == pending["id"]
    assert again.begin(["2024-01-03"], force=False)["id"] != pending["id"]


def test_training_a_day_again_updates_its_entry(tmp_path):
    state = RunState(tmp_path)
    state.record_day("2024-01-01", steps=5, examples=320, global_step=5)
    state.record_day("2024-01-02", steps=5, examples=320, global_step=10)
    state.record_day("2024-01-01", steps=5, examples=320, global_step=15)
    assert state.trained_days == ["2024-01-01", "2024-01-02"]
    entry = state.entry("2024-01-01")
    assert (entry["steps"], entry["times_trained"], entry["global_step"]) == (10, 2, 15)
    assert state.global_step == 15


def test_save_is_atomic_and_a_corrupt_file_is_reported(tmp_path):
    state = RunState(tmp_path)
    state.record_day("2024-01-01", steps=1, global_step=1)
    state.save()
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind
    assert json.loads((tmp_path / "state.json").read_text())["days"][0]["day"] == "2024-01-01"
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(RunError, match=r"state\.json: not a readable state file"):
        RunState.load(tmp_path)


def test_a_failed_write_keeps_the_reason_at_the_end_of_a_long_tensorflow_error(tmp_path):
    import tensorflow as tf

    from mtlrec.training.run.run_directory import RunDirectory

    temp = "/tmp/" + "x" * 400 + "/part-00000-of-00001.data-00000-of-00001.tempstate123"
    error = tf.errors.UnknownError(None, None, "{{function_node __wrapped__SaveV2_dtypes_39}} " + temp + "; File too large")
    with pytest.raises(RunError) as raised:
        with RunDirectory(tmp_path / "run").writing("a checkpoint"):
            raise error
    message = str(raised.value)
    assert "function_node" not in message
    reason = message.split("could not write a checkpoint: ")[1].split("; is the disk full")[0]
    assert reason.endswith("File too large") and reason.startswith("...") and len(reason) == 300
