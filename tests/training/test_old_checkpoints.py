"""Checkpoints written by the trainer before it took its variables from
`MultiTaskModel.variable_groups()` restore every value into the same variable.

A `tf.train.Checkpoint` keys the optimizers' variables and slots by their position in the
list the optimizer was built with, so the trainer must hand the optimizers its variables
in the order it always has (towers, then the model's other per-task layers; the loss
weighting's own variables last). `data/write_old_checkpoints.py` wrote the fixtures."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"
_spec = importlib.util.spec_from_file_location("write_old_checkpoints", DATA / "write_old_checkpoints.py")
old = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(old)


@pytest.mark.parametrize("case", sorted(old.CASES))
def test_old_checkpoint_restores_each_value_into_its_variable(case, tmp_path):
    trainer = old.trainer_of(case, tmp_path)
    variables = old.checkpointed_variables(trainer)
    assert any(name.startswith("dense:") for name, _ in variables)  # slots are checked too
    trainer.checkpoint.read(str(DATA / "old_checkpoints" / case / "ckpt")).assert_existing_objects_matched()
    wrong = [
        name for name, v in variables
        # the slots of the weighting's log-variances are named after its auto-numbered
        # layer name, which depends on how many weightings the process made before
        if "uncertainty_weighting" not in name and not np.array_equal(v.numpy(), np.full(v.shape, old.fill_value(name), dtype=v.dtype))
    ]
    assert wrong == []
