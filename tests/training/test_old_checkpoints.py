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


_maps_spec = importlib.util.spec_from_file_location("write_old_id_maps", DATA / "write_old_id_maps.py")
old_maps = importlib.util.module_from_spec(_maps_spec)
_maps_spec.loader.exec_module(old_maps)
OLD_MAPS = DATA / "old_id_maps"


def _table(keys, values):
    return {(k.decode() if isinstance(k, bytes) else int(k)): tuple(int(x) for x in v) for k, v in zip(keys, values)}


def _written_maps():
    """{table: (entries, {variable: value})} as the old checkpoint holds them."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(OLD_MAPS / "ckpt"))
    out = {}
    for owner in ("item_id", "scene"):
        prefix = f"lookups/0_id_map_{owner}"
        entries = _table(reader.get_tensor(f"{prefix}/table/.ATTRIBUTES/table-keys"),
                         reader.get_tensor(f"{prefix}/table/.ATTRIBUTES/table-values"))
        variables = {
            name: reader.get_tensor(f"{prefix}/{name}/.ATTRIBUTES/VARIABLE_VALUE").tolist()
            for name in ("free_rows", "free_count", "next_row", "day", "day_counts")
        }
        out[owner] = (entries, variables)
    return out


def _maps_of(layer):
    return {
        owner: (_table(*(t.numpy() for t in m.table.export())),
                {n: getattr(m, n).numpy().tolist() for n in ("free_rows", "free_count", "next_row", "day", "day_counts")})
        for owner, m in layer.id_maps.items()
    }


def test_an_old_checkpoint_of_dynamic_maps_restores_them_and_the_next_day_frees_rows_for_their_new_ids(tmp_path):
    import tensorflow as tf

    trainer = old_maps.trainer_of(tmp_path)
    status = trainer.checkpoint.read(str(OLD_MAPS / "ckpt"))  # as CheckpointManager.restore reads it
    status.assert_existing_objects_matched()
    status.expect_partial()
    layer = trainer.lookup_layers[0]
    written = _written_maps()
    assert _maps_of(layer) == written
    # day 2 of the old code: item 1, evicted at the day's start for 7, took its row 0 back
    assert written["item_id"][0][1] == (0, 3, 738887) and written["item_id"][0][7] == (-1, 3, 738886)
    report = layer.lookup_report()["item_id"]
    assert (report["ids_tracked"], report["ids_waiting"], report["ids_dropped"], report["evicted"]) == (12, 6, 0, 1)
    trainer.start_day("2024-01-03")
    # waiting 7 (3), 10 (2, seen on day 2), 12 (2); the least counted admitted 2 (row 1, 2) gives
    # way to 7 only, which takes row 1 now
    entries = _table(*(t.numpy() for t in layer.id_maps["item_id"].table.export()))
    assert entries[7] == (1, 3, 738886) and entries[2] == (-1, 2, 738886)
    layer.observe({"item_id": tf.constant([2, 7], tf.int64)})
    entries = _table(*(t.numpy() for t in layer.id_maps["item_id"].table.export()))
    assert entries[7][0] == 1 and entries[2][0] == -1
    assert layer.lookup_report()["item_id"]["overflow_lookups"] == 1  # 2 waits for a row


def test_an_old_keras_file_and_export_of_dynamic_maps_load_and_score_as_they_did(tmp_path):
    import keras
    import tensorflow as tf

    recorded = dict(np.load(OLD_MAPS / "probe_outputs.npz"))
    features = {k: tf.constant(v) for k, v in old_maps.PROBE.items()}
    model = keras.saving.load_model(OLD_MAPS / "model.keras", safe_mode=True)
    layer = next(lay for lay in model._flatten_layers() if getattr(lay, "id_maps", None))
    assert _maps_of(layer) == _written_maps()  # the same state the checkpoint holds
    assert layer.id_maps["item_id"].report()["ids_dropped"] == 0
    outputs = model(features, training=False)
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(np.asarray(outputs[name]), recorded[name], rtol=0, atol=1e-7, err_msg=name)
    serve = tf.saved_model.load(str(OLD_MAPS / "export" / "1")).signatures["serving_default"]
    served = serve(**features)
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(served[name].numpy(), recorded[name].reshape(-1), rtol=0, atol=1e-6, err_msg=name)
