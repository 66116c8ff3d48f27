"""Runs with `lookup: dynamic` tables: day-by-day growth, kill -9 and resume, the export
(raw ids, unseen ids on their OOV row), two mirrored replicas."""

import copy
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from pathlib import Path

from mtlrec.training.config import load_config
from mtlrec.training.experiment import Experiment
from mtlrec.training.serving.export import latest_export
from mtlrec.training.run.run_state import RunState

_spec = importlib.util.spec_from_file_location("mtlrec_training_conftest", Path(__file__).with_name("conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
DAYS, KNOBS, REPO, SCHEMA = _fixtures.DAYS, _fixtures.KNOBS, _fixtures.REPO, _fixtures.SCHEMA

#: item ids (and the history sharing their table) by a dynamic map of capacity 40 for the
#: 50 items of the tiny data, admitted on their 2nd sighting; users by one of capacity 64.
DYNAMIC = copy.deepcopy(SCHEMA)
DYNAMIC["categorical"][0].update(lookup="dynamic", num_buckets=64, ttl_days=1)
DYNAMIC["categorical"][1].update(lookup="dynamic", num_buckets=40, min_count=2, oov_buckets=1)
OVERRIDES = {"schema": DYNAMIC}


def _checkpoint_state(run_dir):
    """Every tensor of the newest checkpoint; hash tables as {key: value} (order-free)."""
    newest = sorted((run_dir / "checkpoints").glob("ckpt-*"))[-1] / "ckpt"
    reader = tf.train.load_checkpoint(str(newest))
    names = [n for n, _ in tf.train.list_variables(str(newest)) if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    state = {}
    for name in names:
        if name.endswith("table-values"):
            continue
        value = reader.get_tensor(name)
        if name.endswith("table-keys"):
            values = reader.get_tensor(name.replace("table-keys", "table-values"))
            value = dict(zip(value.tolist(), values.tolist()))
        state[name] = value
    return state


def _assert_same_state(a, b, atol=0.0):
    assert sorted(a) == sorted(b)
    for name in a:
        if isinstance(a[name], dict):
            assert a[name] == b[name], name
        elif a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name], b[name], atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _map_entries(state):
    return {n: v for n, v in state.items() if isinstance(v, dict)}


def test_three_days_one_by_one_equal_one_run_over_the_three_days(tmp_path, funnel_root, make_config):
    one, three = tmp_path / "one", tmp_path / "three"
    one.mkdir(), three.mkdir()
    Experiment(load_config(make_config(one, funnel_root, OVERRIDES))).train(days=f"{DAYS[0]}:{DAYS[2]}")
    for day in DAYS[:3]:
        keras.backend.clear_session()
        Experiment(load_config(make_config(three, funnel_root, OVERRIDES))).train(day=day)
    a, b = _checkpoint_state(one / "run"), _checkpoint_state(three / "run")
    _assert_same_state(a, b)
    maps = _map_entries(a)
    assert len(maps) == 2
    items = next(v for k, v in maps.items() if "item_id" in k)
    rows = sorted(v[0] for v in items.values() if v[0] >= 0)
    assert rows == list(range(len(rows))) and 0 < len(rows) <= 40  # one row per admitted id
    assert all(v[1] >= 2 for v in items.values() if v[0] >= 0)  # admitted at min_count 2
    days = RunState.load(one / "run").days
    assert [d["tables"]["item_id"]["rows_in_use"] for d in days] == sorted(d["tables"]["item_id"]["rows_in_use"] for d in days)
    assert days[0]["tables"]["item_id"]["admitted"] > 0
    for d, e in zip(days, RunState.load(three / "run").days):
        assert d["tables"] == e["tables"]
    metrics = (one / "run" / "metrics.csv").read_text().splitlines()
    for metric in ("rows_in_use", "ids_tracked", "ids_waiting", "ids_dropped"):
        rows = [r for r in metrics if r.startswith(f"{DAYS[0]},table:item_id,{metric},")]
        assert len(rows) == 1 and float(rows[0].split(",")[3]) == days[0]["tables"]["item_id"][metric]
    figures = days[0]["tables"]["item_id"]
    assert figures["ids_waiting"] == figures["ids_tracked"] - figures["rows_in_use"] >= 0
    from mtlrec.training.report import make_report

    assert "table_occupancy.png" in [p.name for p in make_report(one / "run")]


@pytest.mark.slow
def test_kill_9_during_a_day_with_admissions_then_resume_equals_an_uninterrupted_run(
    tmp_path, make_config, cli, cli_in_process, kill_mid_day
):
    from mtlrec.data_pipeline import generate_funnel

    root = tmp_path / "data"
    generate_funnel(root, DAYS[0], 2, 3000, seed=4, **dict(KNOBS, num_items=400, num_users=300))
    schema = copy.deepcopy(DYNAMIC)
    schema["categorical"][1].update(num_buckets=300, min_count=3)
    overrides = {"schema": schema, "training": {"batch_size": 32, "checkpoint_every": 10, "log_every": 100}}
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    killed_dir.mkdir(), clean_dir.mkdir()
    config = make_config(killed_dir, root, overrides)
    run_dir = killed_dir / "run"
    command = [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--days", f"{DAYS[0]}:{DAYS[1]}"]
    meta, returncode = kill_mid_day(command, run_dir, cli.env(), day=DAYS[1], timeout=240)
    assert meta is not None and returncode == -signal.SIGKILL
    # the same command again (in this process: the killed one paid for a fresh interpreter)
    code, _, err = cli_in_process("train", config, "--days", f"{DAYS[0]}:{DAYS[1]}")
    assert code == 0, err[-2000:]
    assert "resuming day" in err
    Experiment(load_config(make_config(clean_dir, root, overrides))).train(days=f"{DAYS[0]}:{DAYS[1]}")
    resumed, clean = _checkpoint_state(run_dir), _checkpoint_state(clean_dir / "run")
    _assert_same_state(resumed, clean, atol=1e-5)  # map, counters, weights and slots
    day = RunState.load(run_dir).entry(DAYS[1])["tables"]["item_id"]
    assert day == RunState.load(clean_dir / "run").entry(DAYS[1])["tables"]["item_id"]
    assert day["admitted"] > 0  # the interrupted day did admit ids


def test_the_export_scores_raw_seen_and_unseen_ids_in_a_process_with_only_tensorflow(
    tmp_path, funnel_root, make_config
):
    Experiment(load_config(make_config(tmp_path, funnel_root, OVERRIDES))).train(days=f"{DAYS[0]}:{DAYS[1]}")
    run_dir = tmp_path / "run"
    export = latest_export(run_dir / "export")
    assert not [p for p in export.rglob("*") if p.is_file() and "id_map" in p.name]  # no side files
    items = _checkpoint_state(run_dir)
    items = next(v for k, v in _map_entries(items).items() if "item_id" in k)
    seen = next(k for k, v in items.items() if v[0] >= 0)
    n = 4
    features = {
        "user_id": np.full(n, 1000, np.int64),
        "item_id": np.array([seen, 10**12 + 7, 10**12 + 8, seen], np.int64),  # two never-seen ids
        "scene": np.array(["home"] * n),
        "price": np.full(n, 3.0, np.float32),
        "item_hist_ctr": np.full(n, 0.1, np.float32),
        "hist_item_id": np.array([[seen, -1, -1, -1]] * n, np.int64),
    }
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs, **features)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        serve = tf.saved_model.load({str(export)!r}).signatures["serving_default"]
        data = np.load({str(inputs)!r})
        out = serve(**{{k: tf.constant(data[k]) for k in data.files}})
        np.savez({str(outputs)!r}, **{{k: v.numpy() for k, v in out.items()}})
        print(sorted(sys.modules.keys() & {{"mtlrec"}}))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"  # nothing of mtlrec was needed to serve
    served = dict(np.load(outputs))
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    expected = model({k: tf.constant(v) for k, v in features.items()}, training=False)
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(served[name], np.asarray(expected[name]).reshape(-1), atol=1e-6, err_msg=name)
        assert served[name][1] == served[name][2]  # unseen ids share the one OOV row
        assert served[name][0] == served[name][3] != served[name][1]


MIRRORED = """
import sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mtlrec.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_mirrored_replicas_build_the_map_and_weights_of_one_device(tmp_path, funnel_root, make_config, cli):
    single, mirrored = tmp_path / "single", tmp_path / "mirrored"
    single.mkdir(), mirrored.mkdir()
    crowded = copy.deepcopy(DYNAMIC)  # 30 rows for 50 items: ids wait, and evict the rarest on day 2
    crowded["categorical"][1].update(num_buckets=30, min_count=1)
    overrides = {"schema": crowded}
    Experiment(load_config(make_config(single, funnel_root, overrides))).train(days=f"{DAYS[0]}:{DAYS[1]}")
    assert RunState.load(single / "run").entry(DAYS[1])["tables"]["item_id"]["evicted"] > 0
    config = make_config(mirrored, funnel_root, dict(overrides, training={"strategy": "mirrored"}))
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, "train", str(config), "--days", f"{DAYS[0]}:{DAYS[1]}"],
        capture_output=True, text=True, timeout=600, env=cli.env(), cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy over 2 local replicas" in proc.stderr
    a, b = _checkpoint_state(single / "run"), _checkpoint_state(mirrored / "run")
    assert _map_entries(a) == _map_entries(b) and len(_map_entries(a)) == 2
    _assert_same_state(a, b, atol=2e-5)


def test_a_changed_lookup_is_refused_on_an_existing_run_and_a_bad_one_names_its_line(
    tmp_path, funnel_root, make_config, cli_in_process
):
    Experiment(load_config(make_config(tmp_path, funnel_root))).train(day=DAYS[0])  # hash tables
    config = make_config(tmp_path, funnel_root, OVERRIDES)
    code, _, err = cli_in_process("train", config, "--day", DAYS[1])
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "lookup: dynamic" in text)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"mtlrec: error: {config}:{line}: schema.categorical[0].lookup: feature 'user_id' was trained with "
        f"lookup hash in {tmp_path / 'run'}, the config asks for dynamic; changing a feature's lookup on an "
        "existing run is refused (its rows would no longer mean the same ids); pass --migrate-lookups to "
        "start its table afresh (every other table and weight is kept), or use a new run_dir"
    )
    assert RunState.load(tmp_path / "run").trained_days == [DAYS[0]]
    bad = copy.deepcopy(DYNAMIC)
    bad["categorical"][1]["ttl_days"] = 0
    config = make_config(tmp_path, funnel_root, {"schema": bad}, name="bad.yaml")
    code, _, err = cli_in_process("train", config, "--day", DAYS[1])
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "ttl_days: 0" in text)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"mtlrec: error: {config}:{line}: schema.categorical[1].ttl_days: expected a positive integer, got 0"
    )
