"""`mtlrec train --migrate-lookups`: a table whose lookup settings change on an existing run
starts afresh (seeded rows, zero slots, an empty id map), everything else is restored;
refused without the flag; committed by the migrated day's first checkpoint."""

import copy
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.cli import main
from mtlrec.layers.embedding._id_hashing import hash_ids
from mtlrec.training.config import load_config
from mtlrec.training.errors import ConfigError, RunError
from mtlrec.training.experiment import Experiment
from mtlrec.training.serving.export import latest_export
from mtlrec.training.lookups.lookup_migration import restore_migrated
from mtlrec.training.run.run_directory import RunDirectory
from mtlrec.training.run_schema import resolve_schema
from mtlrec.training.run.run_state import RunState
from mtlrec.training.trainer import Trainer

_spec = importlib.util.spec_from_file_location("mtlrec_training_conftest", Path(__file__).with_name("conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
DAYS, SCHEMA, config_file = _fixtures.DAYS, _fixtures.SCHEMA, _fixtures.config_file

#: item_id (and hist_item_id, which shares its table) moved from hash (128 rows) to dynamic
#: (127 + 1 OOV rows: the same shape, so only the migration tells the tables apart).
MIGRATED = copy.deepcopy(SCHEMA)
MIGRATED["categorical"][1].update(lookup="dynamic", num_buckets=127, min_count=2)
TO = {"lookup": "dynamic", "num_buckets": 127, "oov_buckets": 1, "min_count": 2, "ttl_days": None,
      "count_half_life_days": 7, "max_waiting": 127}


def _name(variable):
    return variable.path.split("/", 1)[-1]  # an optimizer's variable, without the optimizer's name


@pytest.fixture(scope="module")
def day_one(tmp_path_factory, funnel_root):
    """A run that trained day 1 with hash tables: (run_dir, model weights by path, optimizer
    variables by name, global step), read only: tests copy the run directory."""
    directory = tmp_path_factory.mktemp("hash_day_one")
    experiment = Experiment(load_config(config_file(directory, funnel_root)))
    experiment.train(day=DAYS[0])
    trainer = experiment.trainer
    weights = {v.path: v.numpy() for v in trainer.model.variables}
    slots = {_name(v): v.numpy() for v in trainer.embedding_optimizer.variables + trainer.dense_optimizer.variables}
    step = int(trainer.global_step.numpy())
    keras.backend.clear_session()
    return directory / "run", weights, slots, step


def _copy_run(day_one, directory):
    shutil.copytree(day_one[0], Path(directory) / "run")
    return Path(directory) / "run"


def _train(capsys, *args):
    """``mtlrec train ARGS`` in this process: (exit code, stderr)."""
    keras.backend.clear_session()
    capsys.readouterr()
    code = main(["train", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def _snapshot(run_dir):
    """schema.json, state.json's trained days and migrations, the checkpoints and their metas."""
    state = RunState.load(run_dir)
    metas = {p.parent.name: p.read_text() for p in sorted((run_dir / "checkpoints").glob("ckpt-*/meta.json"))}
    return (run_dir / "schema.json").read_text(), state.trained_days, state.data.get("lookup_migrations"), metas


def test_changed_lookup_settings_are_refused_naming_the_feature_both_values_and_the_flag(
    tmp_path, funnel_root, day_one, capsys
):
    run_dir = _copy_run(day_one, tmp_path)
    config = config_file(tmp_path, funnel_root, {"schema": MIGRATED})
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "lookup: dynamic" in text)
    code, err = _train(capsys, config, "--day", DAYS[1])
    assert code == 2
    assert err.splitlines()[-1] == (
        f"mtlrec: error: {config}:{line}: schema.categorical[1].lookup: feature 'item_id' (and "
        f"'hist_item_id', sharing its table) was trained with lookup hash in {run_dir}, the config asks for "
        "dynamic; changing a feature's lookup on an existing run is refused (its rows would no longer mean "
        "the same ids); pass --migrate-lookups to start its table afresh (every other table and weight is "
        "kept), or use a new run_dir"
    )
    wider = copy.deepcopy(SCHEMA)
    wider["categorical"][0]["num_buckets"] = 256  # the same lookup, another range: refused too
    config = config_file(tmp_path, funnel_root, {"schema": wider}, name="wider.yaml")
    with pytest.raises(ConfigError) as raised:
        resolve_schema(load_config(config), RunDirectory(run_dir), DAYS[1])
    assert "schema.categorical[0].num_buckets: feature 'user_id' was trained with num_buckets 128 in " in str(raised.value)
    assert "the config asks for 256; changing a feature's num_buckets on an existing run is refused" in str(raised.value)
    wider["categorical"][0]["dim"] = 8  # more than lookup settings: the flag does not help
    config = config_file(tmp_path, funnel_root, {"schema": wider}, name="dim.yaml")
    with pytest.raises(RunError, match="the config's schema differs from the schema this run directory was trained with"):
        resolve_schema(load_config(config), RunDirectory(run_dir), DAYS[1], migrate=True)


def test_the_flag_with_nothing_to_migrate_is_a_note_and_a_mid_day_checkpoint_is_refused(
    tmp_path, funnel_root, day_one, caplog
):
    run_dir = _copy_run(day_one, tmp_path)
    run = RunDirectory(run_dir)
    with caplog.at_level(logging.WARNING, logger="mtlrec.training"):
        schema, changes = resolve_schema(load_config(config_file(tmp_path, funnel_root)), run, DAYS[1], migrate=True)
        assert changes == [] and schema == run.saved_schema()
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        resolve_schema(load_config(config_file(fresh, funnel_root)), RunDirectory(fresh / "run"), DAYS[0], migrate=True)
    assert [r.getMessage() for r in caplog.records] == [
        f"--migrate-lookups: nothing to migrate (no table of {run_dir} changes its lookup, num_buckets or oov_buckets)",
        f"--migrate-lookups: nothing to migrate ({fresh / 'run'} is a new run)",
    ]
    newest = sorted((run_dir / "checkpoints").glob("ckpt-*"))[-1]
    meta = json.loads((newest / "meta.json").read_text())
    (newest / "meta.json").write_text(json.dumps(dict(meta, completed=False, steps=2)))
    with pytest.raises(RunError) as raised:
        restore_migrated(run, None, run.saved_schema(), [])
    assert str(raised.value) == (
        f"{newest}: day {DAYS[0]} was interrupted at step 2 of the day; finish it with the lookups it was "
        "trained with (the same command, without the changed lookups) before --migrate-lookups"
    )


def test_a_table_that_becomes_identity_reads_for_each_id_the_row_it_read_before(tmp_path, funnel_root, day_one):
    run_dir = _copy_run(day_one, tmp_path)
    _, weights, _, _ = day_one
    schema = copy.deepcopy(SCHEMA)
    schema["categorical"][0].update(lookup="identity", num_buckets=100)  # user_id: hash 128 -> identity 100 (+1 OOV)
    experiment = load_config(config_file(tmp_path, funnel_root, {"schema": schema}))
    run = RunDirectory(run_dir)
    with pytest.raises(ConfigError, match="pass --migrate-lookups to warm-start its table from its old rows"):
        resolve_schema(experiment, run, DAYS[1])
    migrated, changes = resolve_schema(experiment, run, DAYS[1], migrate=True)
    assert [c.start for c in changes] == ["warm"]
    keras.backend.clear_session()
    new_run, trainer = Trainer(experiment, migrated), Trainer(experiment, migrated)
    restore_migrated(run, trainer, run.saved_schema(), changes)
    layer = trainer.lookup_layers[0]
    ids = np.arange(100, dtype=np.int64)
    read = layer({"user_id": tf.constant(ids)}, subset="user_id")["embeddings"]["user_id"].numpy()
    before = weights[layer.tables["user_id"].path]
    np.testing.assert_array_equal(read, before[hash_ids(tf.constant(ids), 128).numpy()])  # what id r read before
    table = layer.tables["user_id"].numpy()
    np.testing.assert_array_equal(table[100:], new_run.lookup_layers[0].tables["user_id"].numpy()[100:])  # OOV: seeded
    for variable in trainer.embedding_optimizer.variables:
        if "embedding_user_id" in variable.path:
            assert not variable.numpy().any(), variable.path


SERVE = """
import sys
import numpy as np
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
data = np.load(sys.argv[2])
out = serve(**{k: tf.constant(data[k]) for k in data.files})
np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
print(sorted(sys.modules.keys() & {"mtlrec"}))
"""


def _served_in_a_fresh_process(tmp_path, export, features):
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs, **features)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    proc = subprocess.run(
        [sys.executable, "-c", SERVE, str(export), str(inputs), str(outputs)],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path), env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"  # nothing of mtlrec was needed to serve
    return dict(np.load(outputs))


def test_kill_9_before_the_migrated_checkpoint_then_the_migration_restarts_only_the_changed_table(
    tmp_path, funnel_root, day_one, capsys, cli
):
    run_dir = _copy_run(day_one, tmp_path)
    _, weights, slots, step = day_one
    config = config_file(tmp_path, funnel_root, {"schema": MIGRATED})
    before = _snapshot(run_dir)

    # killed after the migration and a first step, before the day's first checkpoint
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--day", DAYS[1], "--migrate-lookups"],
        capture_output=True, text=True, timeout=240, env=cli.env(MTLREC_FAULT_POINT="train.step:1"),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "--migrate-lookups: migrated tables item_id (fresh rows); everything else restored from" in proc.stderr
    assert _snapshot(run_dir) == before  # the run as it was
    code, err = _train(capsys, config, "--day", DAYS[1])
    assert code == 2 and "pass --migrate-lookups" in err  # refused again

    # what the migration restores, before any training
    keras.backend.clear_session()
    experiment = load_config(config)
    run = RunDirectory(run_dir)
    schema, changes = resolve_schema(experiment, run, DAYS[1], migrate=True)
    assert [c.as_dict() for c in changes] == [
        {"table": "item_id", "features": ["item_id", "hist_item_id"], "from": {"lookup": "hash", "num_buckets": 128}, "to": TO,
         "start": "fresh"}
    ]
    new_run = Trainer(experiment, schema)  # what a new run would start with
    trainer = Trainer(experiment, schema)
    restore_migrated(run, trainer, run.saved_schema(), changes)
    start = {v.path: v.numpy() for v in new_run.model.variables}
    for variable in trainer.model.variables:
        if "item_id" in variable.path:  # the table and its map's counters
            np.testing.assert_array_equal(variable.numpy(), start[variable.path], err_msg=variable.path)
        else:
            np.testing.assert_array_equal(variable.numpy(), weights[variable.path], err_msg=variable.path)
    table = next(v for v in trainer.model.variables if v.path.endswith("embedding_item_id"))
    assert table.shape == weights[table.path].shape == (128, 4)
    assert not np.allclose(table.numpy(), weights[table.path])
    assert 0 < np.abs(table.numpy()).max() <= 0.05  # the seeded uniform init of a new table
    for variable in trainer.embedding_optimizer.variables + trainer.dense_optimizer.variables:
        if "embedding_item_id" in variable.path:
            assert not variable.numpy().any(), variable.path  # slots start at zero
        else:
            np.testing.assert_array_equal(variable.numpy(), slots[_name(variable)], err_msg=variable.path)
    assert slots["feature_embedding_embedding_user_id_velocity"].any()  # a kept slot is not trivially zero
    assert int(trainer.global_step.numpy()) == step
    layer = next(layer for layer in trainer.lookup_layers)
    assert int(layer.id_maps["item_id"].table.size()) == 0  # the map starts empty
    del trainer, new_run

    # the migration again, killed once its first checkpoint is written, before schema.json
    # and state.json follow: that checkpoint committed it, the same day resumes without the flag
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--day", DAYS[1], "--migrate-lookups"],
        capture_output=True, text=True, timeout=240, env=cli.env(MTLREC_FAULT_POINT="migration.checkpointed"),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (run_dir / "schema.json").read_text() == before[0] and RunState.load(run_dir).trained_days == DAYS[:1]
    assert RunDirectory(run_dir).saved_schema() == schema
    code, err = _train(capsys, config, "--day", DAYS[1])
    assert code == 0, err
    assert f"resuming day {DAYS[1]} after 2 steps" in err
    state = RunState.load(run_dir)
    assert state.trained_days == DAYS[:2]
    (migration,) = state.data["lookup_migrations"]
    assert migration["day"] == DAYS[1] and migration["tables"] == [c.as_dict() for c in changes]
    saved = json.loads((run_dir / "schema.json").read_text())
    assert saved["categorical"][1] == {"name": "item_id", "dtype": "int64", "num_buckets": 127, "dim": 4,
                                       "lookup": "dynamic", "min_count": 2}
    assert saved["numeric"] == json.loads(before[0])["numeric"]  # the run's statistics are kept
    assert state.entry(DAYS[1])["tables"]["item_id"]["admitted"] > 0
    code, err = _train(capsys, config, "--day", DAYS[2])
    assert code == 0, err
    state = RunState.load(run_dir)
    assert state.trained_days == DAYS[:3] and len(state.data["lookup_migrations"]) == 1

    # the admission settings decide only which ids get rows from now on: no flag, nothing restarts
    stricter = copy.deepcopy(MIGRATED)
    stricter["categorical"][1].update(min_count=3, ttl_days=5, count_half_life_days=3, max_waiting=50)
    code, err = _train(capsys, config_file(tmp_path, funnel_root, {"schema": stricter}, name="stricter.yaml"), "--day", DAYS[3])
    assert code == 0, err
    assert "migrated tables item_id (rows and id map kept)" in err
    state = RunState.load(run_dir)
    assert state.data["lookup_migrations"][1]["tables"] == [{
        "table": "item_id", "features": ["item_id", "hist_item_id"], "from": TO,
        "to": dict(TO, min_count=3, ttl_days=5, count_half_life_days=3, max_waiting=50), "start": "kept",
    }]
    day3, day4 = (state.entry(d)["tables"]["item_id"] for d in DAYS[2:])
    assert day4["rows_in_use"] == day3["rows_in_use"] + day4["admitted"]  # day 3's ids kept their rows
    assert json.loads((run_dir / "schema.json").read_text())["categorical"][1]["ttl_days"] == 5

    # the export scores raw ids (seen and never seen) in a process that imports only TensorFlow
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    id_map = next(layer for layer in model._flatten_layers() if hasattr(layer, "id_maps")).id_maps["item_id"]
    keys, values = (t.numpy() for t in id_map.table.export())
    seen = int(keys[values[:, 0] >= 0][0])
    n = 4
    features = {
        "user_id": np.full(n, 1000, np.int64),
        "item_id": np.array([seen, 10**12 + 7, 10**12 + 8, seen], np.int64),
        "scene": np.array(["home"] * n),
        "price": np.full(n, 3.0, np.float32),
        "item_hist_ctr": np.full(n, 0.1, np.float32),
        "hist_item_id": np.array([[seen, -1, -1, -1]] * n, np.int64),
    }
    served = _served_in_a_fresh_process(tmp_path, latest_export(run_dir / "export"), features)
    expected = model({k: tf.constant(v) for k, v in features.items()}, training=False)
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(served[name], np.asarray(expected[name]).reshape(-1), atol=1e-6, err_msg=name)
        assert served[name][1] == served[name][2] != served[name][0] == served[name][3]
