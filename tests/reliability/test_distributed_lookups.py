"""`identity` and `dynamic` lookups under `multi_worker` (two worker processes) and
`parameter_server` (1 chief, 2 workers, 2 ps) on 127.0.0.1: the id maps a cluster builds."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtlrec.training.config import load_config
from mtlrec.training.distribute.parameter_server import local_cluster
from mtlrec.training.experiment import Experiment
from mtlrec.training.run.run_state import RunState

TWO_DAYS = "2024-01-01:2024-01-02"
DAY2 = "2024-01-02"


def _schema(training):
    """Users by a dynamic map, items and their history by one too small for the 50 items
    (ids wait, and evict the rarest on day 2), the two scenes (strings) by one of 1 row
    (the other waits), brands 0-9 by identity over 8 rows (8 and 9 read OOV rows)."""
    schema = copy.deepcopy(training.SCHEMA)
    user, item, scene = schema["categorical"]
    user.update(lookup="dynamic", num_buckets=64, ttl_days=1)
    item.update(lookup="dynamic", num_buckets=30, min_count=1, oov_buckets=1)
    scene.update(lookup="dynamic", num_buckets=1, min_count=2, oov_buckets=1)
    schema["categorical"].append(
        {"name": "item_brand", "dtype": "int64", "num_buckets": 8, "dim": 4, "lookup": "identity", "oov_buckets": 2}
    )
    return schema


def _checkpoint_state(run_dir):
    """Every tensor of the newest checkpoint; hash tables as {key: value} (order-free)."""
    newest = sorted((run_dir / "checkpoints").glob("ckpt-*"))[-1] / "ckpt"
    reader = tf.train.load_checkpoint(str(newest))
    state = {}
    for name, _ in tf.train.list_variables(str(newest)):
        if name == "_CHECKPOINTABLE_OBJECT_GRAPH" or name.endswith("table-values"):
            continue
        value = reader.get_tensor(name)
        if name.endswith("table-keys"):
            values = reader.get_tensor(name.replace("table-keys", "table-values"))
            value = dict(zip(value.tolist(), values.tolist()))
        state[name] = value
    return state


def _maps(state):
    return {name: value for name, value in state.items() if isinstance(value, dict)}


def _updated_item_rows(state):
    """Rows of the item table (30 + 1 rows) whose Adam moments are not 0 (rows some step
    updated): its two slots, kept by the embedding optimizer (one process) or by the
    tables' shards (parameter_server)."""
    slots = [v for n, v in state.items() if n.startswith(("embedding_optimizer/_variables/", "embedding_slots/"))
             and getattr(v, "shape", None) == (31, 4)]
    assert len(slots) == 2
    return set(np.flatnonzero(sum(np.abs(v).sum(axis=1) for v in slots)).tolist())


def _run_procs(commands, timeout):
    """Start every ``(argv, env)``, wait for all; returns their (returncode, stderr)."""
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for argv, env in commands]
    try:
        return [(proc.wait(timeout=timeout), proc.stderr.read()) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, funnel_root, training):
    """Two days trained by one process (the reference)."""
    directory = tmp_path_factory.mktemp("single")
    config = training.config_file(directory, funnel_root, {"schema": _schema(training)})
    Experiment(load_config(config)).train(days=TWO_DAYS)
    return directory / "run"


@pytest.mark.slow
def test_two_workers_build_the_id_maps_and_model_of_one_process(tmp_path, funnel_root, training, cli, single_run):
    """Each worker reads half of every global batch; both count the whole batch, so both
    maps equal one process's, entry for entry (rows, counts, days), over two days with
    admissions, waiting ids and evictions, and the weights agree to float rounding."""
    entry = RunState.load(single_run).entry(DAY2)["tables"]
    assert entry["item_id"]["evicted"] > 0 and entry["item_id"]["ids_waiting"] > 0
    assert entry["scene"]["rows_in_use"] == 1 and entry["scene"]["ids_waiting"] == 1
    assert entry["item_brand"]["lookup"] == "identity" and 0 < entry["item_brand"]["oov_lookups"] < entry["item_brand"]["lookups"]
    config = training.config_file(tmp_path, funnel_root, {"schema": _schema(training)})
    cluster = {"worker": local_cluster(workers=2, ps=0)["worker"]}
    argv = [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--days", TWO_DAYS]
    results = _run_procs(
        [(argv, cli.env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
         for i in range(2)],
        timeout=300,
    )
    for code, err in results:
        assert code == 0, err[-3000:]
    assert "MultiWorkerMirroredStrategy: 2 workers" in results[0][1] and "sharded by record" in results[0][1]
    multi_run = tmp_path / "run"
    assert RunState.load(multi_run).entry(DAY2)["tables"] == entry
    a, b = _checkpoint_state(single_run), _checkpoint_state(multi_run)
    assert sorted(a) == sorted(b)
    assert _maps(a) == _maps(b) and len(_maps(a)) == 3  # users', items' and scenes' maps
    assert any(isinstance(key, bytes) for m in _maps(a).values() for key in m)  # the string map
    for name in a:
        if not isinstance(a[name], dict):
            np.testing.assert_allclose(a[name], b[name], atol=2e-5, err_msg=name)


@pytest.mark.slow
def test_a_parameter_server_cluster_builds_the_id_maps_of_one_process(tmp_path, funnel_root, training, single_run,
                                                                      ps_cluster):
    """1 chief, 2 workers, 2 ps: the chief counts and admits each batch's ids in data order
    before it schedules the step, so the maps (and each day's lookup figures) equal one
    process's entry for entry, though the workers' asynchronous steps give other weights,
    also when the chief is killed in the middle of day 2 and resumed from its checkpoint;
    the chief's model for evaluation and export holds the maps."""
    config = training.config_file(
        tmp_path, funnel_root, {"schema": _schema(training), "training": {"strategy": "parameter_server"}}
    )
    argv = [sys.executable, "-m", "mtlrec.cli", "train", str(config), "--days", TWO_DAYS]
    # the worker and ps tasks: tests/reliability/conftest.py's cluster, shared with test_parameter_server.py
    ps_cluster.wait_ready()
    chief_env = ps_cluster.env("chief")
    # the chief killed (kill -9) at a checkpoint in the middle of day 2, then resumed
    log = tmp_path / "chief-killed.log"
    meta, code = training.kill_at_mid_day_checkpoint(argv, tmp_path / "run", chief_env, day=DAY2, timeout=300, log=log)
    assert meta is not None and 0 < meta["steps"] < 5, (meta, log.read_text()[-2000:])
    chief = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=chief_env)
    assert chief.returncode == 0, chief.stderr[-3000:]
    assert "ParameterServerStrategy: 2 workers, 2 ps tasks" in chief.stderr and "resum" in chief.stderr.lower()
    ps_run = tmp_path / "run"
    for day in TWO_DAYS.split(":"):
        assert RunState.load(ps_run).entry(day)["tables"] == RunState.load(single_run).entry(day)["tables"]
    a, b = _checkpoint_state(single_run), _checkpoint_state(ps_run)
    assert _maps(a) == _maps(b) and len(_maps(a)) == 3
    # the workers' steps read the chief's maps: the item rows the steps updated (Adam's first
    # moment not 0) are those of one process, not only the OOV row (row 30)
    assert _updated_item_rows(a) == _updated_item_rows(b) and len(_updated_item_rows(b)) > 20
    # the chief's local model (model.keras, evaluation, export) holds the maps, entry for entry
    import keras

    import mtlrec.models  # noqa: F401  (registers the model classes)

    model = keras.saving.load_model(ps_run / "checkpoints" / "model.keras", safe_mode=True)
    embedding = next(layer for layer in model._flatten_layers() if getattr(layer, "id_maps", None))
    saved = {}
    for owner, id_map in embedding.id_maps.items():
        keys, values = (t.numpy() for t in id_map.table.export())
        saved[owner] = dict(zip(keys.tolist(), values.tolist()))
    assert sorted(saved.values(), key=len) == sorted(_maps(b).values(), key=len)
