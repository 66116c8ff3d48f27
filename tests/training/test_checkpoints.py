import json

import numpy as np
import pytest
import tensorflow as tf

from mtlrec.models.model_format import MODEL_FORMAT
from mtlrec.training.run.checkpoints import CheckpointManager
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
    assert path.name == "ckpt-000003"
    assert meta == {"day": "2024-01-01", "steps": 3, "model_format": MODEL_FORMAT}

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
    assert again.latest()[1] == {"steps": 1, "model_format": MODEL_FORMAT}


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
    meta = json.loads((manager.checkpoints()[0] / "meta.json").read_text())
    assert meta == {"steps": 1, "model_format": MODEL_FORMAT}


def test_restoring_into_a_different_model_is_a_clear_error(tmp_path):
    manager, _, _ = make(tmp_path)
    path = manager.save({"steps": 1})
    other = tf.train.Checkpoint(weights=tf.Variable(np.zeros((5,), np.float32)))
    with pytest.raises(RunError, match="does not match the model built from the config"):
        CheckpointManager(tmp_path / "checkpoints", other).restore(path)
    with pytest.raises(ValueError, match="Received: keep=0"):
        CheckpointManager(tmp_path / "x", other, keep=0)


@pytest.mark.parametrize("recorded", [None, 1])
def test_a_checkpoint_of_an_older_model_format_is_refused(tmp_path, recorded):
    """Checkpoints written before model format 2 (no model_format in meta.json) would restore
    their weights into the wrong layers of today's models: refused, one message."""
    manager, variable, _ = make(tmp_path)
    path = manager.save({"steps": 1})
    meta = json.loads((path / "meta.json").read_text())
    del meta["model_format"]
    if recorded is not None:
        meta["model_format"] = recorded
    (path / "meta.json").write_text(json.dumps(meta))
    variable.assign([7.0, 7.0, 7.0])
    written = "before model formats were recorded" if recorded is None else "in model format 1"
    message = (
        f"checkpoint {path}: written by mtlrec {written}; this model reads model format "
        f"3 or {MODEL_FORMAT} only (format 2, mtlrec 0.2.0: heads output logits, weights seeded by "
        "path; format 3, 0.3.0: MMoE experts batch-normalised; format 4, 0.4.0: only with expert_batch_norm)"
    )
    with pytest.raises(RunError, match=message.replace("(", r"\(").replace(")", r"\)")):
        manager.restore(path)
    np.testing.assert_array_equal(variable.numpy(), [7.0, 7.0, 7.0])


SCHEMA = {
    "categorical": [{"name": "user_id", "num_buckets": 50, "dim": 4}],
    "numeric": [{"name": "price"}],
    "labels": [{"name": "click"}],
}
TASKS = [{"name": "ctr", "label": "click"}]


def _format_3_checkpoint(tmp_path, model):
    manager = CheckpointManager(tmp_path / "checkpoints", tf.train.Checkpoint(model=model))
    path = manager.save({"steps": 1})
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps(dict(meta, model_format=3)))
    return manager, path


def test_format_3_restores_unless_an_mmoe_lost_its_expert_batch_norm(tmp_path):
    """Format 4 changed only MMoE's experts (batch norm by default only on numeric inputs):
    a format-3 checkpoint restores into every other model and into an MMoE with
    `expert_batch_norm`; into an MMoE without it (whose restore would silently drop the
    experts' batch-norm weights) it is refused with the setting that resumes it."""
    from mtlrec.models import ESMM, MMoE

    _, path = _format_3_checkpoint(tmp_path / "esmm", ESMM(SCHEMA, [
        {"name": "ctr", "label": "click"}, {"name": "ctcvr", "label": "click", "parent": "ctr"}], seed=1))
    CheckpointManager(path.parent, tf.train.Checkpoint(model=ESMM(SCHEMA, [
        {"name": "ctr", "label": "click"}, {"name": "ctcvr", "label": "click", "parent": "ctr"}], seed=2))).restore(path)

    with_norm = MMoE(SCHEMA, TASKS, num_experts=2, expert_batch_norm=True, seed=1)
    _, path = _format_3_checkpoint(tmp_path / "mmoe", with_norm)
    again = MMoE(SCHEMA, TASKS, num_experts=2, expert_batch_norm=True, seed=2)
    CheckpointManager(path.parent, tf.train.Checkpoint(model=again)).restore(path)

    without = MMoE(SCHEMA, TASKS, num_experts=2, seed=2)
    assert without.expert_batch_norm is False
    with pytest.raises(RunError, match=r"this model reads model format 4 only .*; an MMoE of format 3 "
                                       r"loads with model.expert_batch_norm: true\.$"):
        CheckpointManager(path.parent, tf.train.Checkpoint(model=without)).restore(path)
