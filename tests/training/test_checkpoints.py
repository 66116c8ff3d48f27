import json

import numpy as np
import pytest
import tensorflow as tf

from mtlrec.training.checkpoints import CheckpointManager
from mtlrec.training.errors import RunError


def make(tmp_path, value=0.0, keep=2):
    variable = tf.Variable(np.full((3,), value, dtype=np.float32))
    step = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(weights=variable, global_step=step)
    return CheckpointManager(tmp_path / "checkpoints", checkpoint, keep=keep), variable, step


def test_save_keeps_the_newest_and_restores_them(tmp_path):
    manager, variable, step = make(tmp_path)
    for i in range(1, 4):
        variable.assign([i, i, i])
        step.assign(i)
        manager.save({"day": "2024-01-01", "steps": i})
    names = [p.name for p in manager.checkpoints()]
    assert names == ["ckpt-000002", "ckpt-000003"]
    path, meta = manager.latest()
    assert path.name == "ckpt-000003" and meta == {"day": "2024-01-01", "steps": 3}

    fresh, fresh_variable, fresh_step = make(tmp_path, value=-1.0)
    fresh.restore(path)
    np.testing.assert_array_equal(fresh_variable.numpy(), [3, 3, 3])
    assert int(fresh_step.numpy()) == 3


def test_half_written_checkpoints_are_ignored_and_cleaned(tmp_path):
    manager, variable, _ = make(tmp_path)
    manager.save({"steps": 1})
    # a writer killed mid-write leaves a temp dir; a dir without meta.json is not complete
    (tmp_path / "checkpoints" / ".tmp-ckpt-000002.999").mkdir()
    (tmp_path / "checkpoints" / "ckpt-000009").mkdir()
    assert [p.name for p in manager.checkpoints()] == ["ckpt-000001"]
    again, _, _ = make(tmp_path)
    assert not (tmp_path / "checkpoints" / ".tmp-ckpt-000002.999").exists()
    assert again.latest()[1] == {"steps": 1}


def test_a_failed_write_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    manager, variable, _ = make(tmp_path)
    manager.save({"steps": 1})

    def broken(prefix):
        raise OSError("No space left on device")

    monkeypatch.setattr(manager.checkpoint, "write", broken)
    with pytest.raises(OSError, match="No space left"):
        manager.save({"steps": 2})
    assert [p.name for p in manager.checkpoints()] == ["ckpt-000001"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["ckpt-000001"]
    assert json.loads((manager.checkpoints()[0] / "meta.json").read_text()) == {"steps": 1}


def test_restoring_into_a_different_model_is_a_clear_error(tmp_path):
    manager, _, _ = make(tmp_path)
    path = manager.save({"steps": 1})
    other = tf.train.Checkpoint(weights=tf.Variable(np.zeros((5,), np.float32)))
    with pytest.raises(RunError, match="does not match the model built from the config"):
        CheckpointManager(tmp_path / "checkpoints", other).restore(path)
    with pytest.raises(ValueError, match="Received: keep=0"):
        CheckpointManager(tmp_path / "x", other, keep=0)
