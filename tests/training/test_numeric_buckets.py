"""Bucketized numerics in a run: boundaries from the first training day kept in
schema.json through a resume in another process, the export bucketizing raw values as
`mtlrec predict` scores them, a changed encoding refused, bad first days refused, and
run directories written before numerics could be embeddings still loading."""

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtlrec.cli import main
from mtlrec.quantiles import QuantileSketch, quantile_boundaries
from mtlrec.training.config import load_config
from mtlrec.training.experiment import Experiment
from mtlrec.training.run.run_directory import RunDirectory
from mtlrec.training.run.run_state import RunState
from mtlrec.training.run_schema import resolve_schema
from mtlrec.training.serving.export import latest_export
from mtlrec.training.serving.predict import input_files, predict_file

_spec = importlib.util.spec_from_file_location("mtlrec_training_conftest", Path(__file__).with_name("conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
DAYS, SCHEMA, config_file, run_cli = _fixtures.DAYS, _fixtures.SCHEMA, _fixtures.config_file, _fixtures.run_cli

BUCKETED = copy.deepcopy(SCHEMA)
BUCKETED["numeric"] = [
    {"name": "price", "normalize": "bucketize", "num_buckets": 8, "default": 0.0},
    {"name": "item_hist_ctr", "normalize": "piecewise_linear", "num_buckets": 6, "default": 0.08},
]
#: the numerics are fields of the FM block (with the three categorical ids: 5 fields of dim 4)
OVERRIDES = {"schema": BUCKETED, "model": {"interaction": {"type": "fm"}}}


def _column(root, day, name):
    return pq.read_table(input_files(Path(root) / f"dt={day}")[0]).column(name).to_numpy()


def _cuts(root, day, name, buckets):
    sketch = QuantileSketch()
    sketch.add(_column(root, day, name))
    return quantile_boundaries(sketch, buckets)


@pytest.fixture(scope="module")
def bucketized_run(tmp_path_factory, funnel_root):
    """Day 1 trained in this process, day 2 resumed by ``mtlrec train`` in another one:
    (config, run_dir, schema.json after day 1)."""
    directory = tmp_path_factory.mktemp("bucketized")
    config = config_file(directory, funnel_root, OVERRIDES)
    Experiment(load_config(config)).train(day=DAYS[0])
    run_dir = directory / "run"
    after_day_one = (run_dir / "schema.json").read_text()
    keras.backend.clear_session()
    code, _, err = run_cli("train", config, "--day", DAYS[1])
    assert code == 0, err[-2000:]
    return config, run_dir, after_day_one


def test_bucketize_boundaries_from_the_first_day_survive_resume(bucketized_run, funnel_root):
    _, run_dir, after_day_one = bucketized_run
    numeric = json.loads(after_day_one)["numeric"]
    price, ctr = numeric[0]["boundaries"], numeric[1]["boundaries"]
    assert price == _cuts(funnel_root, DAYS[0], "price", 8) and len(price) == 7
    assert ctr == _cuts(funnel_root, DAYS[0], "item_hist_ctr", 6) and len(ctr) == 5
    # the second day's values would give other cuts: a recomputation would show
    assert ctr != _cuts(funnel_root, DAYS[1], "item_hist_ctr", 6)
    assert (run_dir / "schema.json").read_text() == after_day_one  # unchanged by the resume
    assert RunState.load(run_dir).trained_days == DAYS[:2]
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    saved = model.get_layer("feature_embedding").get_config()["schema"]["numeric"]
    assert [f["boundaries"] for f in saved] == [price, ctr]
    assert {k: tuple(v.shape) for k, v in model.get_layer("feature_embedding").numeric_tables.items()} == {
        "price": (8, 4), "item_hist_ctr": (5, 4),  # 8 buckets; 4 between the 5 cuts + the bias row
    }


def test_the_export_bucketizes_raw_values_as_mtlrec_predict_scores_them(bucketized_run, funnel_root, tmp_path):
    _, run_dir, _ = bucketized_run
    export = latest_export(run_dir / "export")
    day = funnel_root / f"dt={DAYS[3]}"
    scores = tmp_path / "scores.parquet"
    predict_file(export, day, scores, batch_size=100)  # what `mtlrec predict` runs
    # the raw float columns as stored, served in a process that imports TensorFlow only
    source = pq.read_table(input_files(day)[0])
    inputs = tmp_path / "inputs.npz"
    raw = {n: source.column(n).to_numpy() for n in ("user_id", "item_id", "price", "item_hist_ctr")}
    raw["scene"] = np.asarray(source.column("scene").to_pylist()).astype(str)
    raw["hist_item_id"] = np.array([(h[-4:] + [-1] * 4)[:4] for h in source.column("hist_item_id").to_pylist()], np.int64)
    raw = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in raw.items()}
    np.savez(inputs, **raw)
    served = tmp_path / "served.npz"
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        serve = tf.saved_model.load({str(export)!r}).signatures["serving_default"]
        data = np.load({str(inputs)!r})
        out = serve(**{{k: tf.constant(data[k]) for k in data.files}})
        np.savez({str(served)!r}, **{{k: v.numpy() for k, v in out.items()}})
        assert "mtlrec" not in sys.modules  # nothing of mtlrec is needed to serve
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    predicted, served = pq.read_table(scores), np.load(served)
    assert predicted.num_rows == source.num_rows == 320
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(served[name].reshape(-1), np.asarray(predicted.column(name)), rtol=0, atol=1e-6)
    assert len(np.unique(np.asarray(predicted.column("ctr")))) > 50  # the scores are not one constant


def _train(capsys, *args):
    keras.backend.clear_session()
    capsys.readouterr()
    code = main(["train", *map(str, args)])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def _line(config, text):
    return next(i for i, line in enumerate(Path(config).read_text().splitlines(), 1) if text in line)


def test_a_changed_numeric_encoding_is_refused_naming_what_changed(bucketized_run, funnel_root, tmp_path, capsys):
    _, trained, after_day_one = bucketized_run
    shutil.copytree(trained, tmp_path / "run")
    run_dir = tmp_path / "run"
    price = json.loads(after_day_one)["numeric"][0]["boundaries"]

    moved = copy.deepcopy(BUCKETED)
    moved["numeric"][0]["boundaries"] = price[:3] + [price[3] + 0.5] + price[4:]
    config = config_file(tmp_path, funnel_root, {**OVERRIDES, "schema": moved}, name="moved.yaml")
    code, err = _train(capsys, config, "--day", DAYS[2])
    assert code == 2
    assert err == (
        # the line of the changed value itself: the list is written one value a line
        f"mtlrec: error: {config}:{_line(config, 'boundaries:') + 4}: schema.numeric[0].boundaries[3]: feature 'price' was "
        f"trained with boundaries[3] {price[3]:g} in {run_dir}, the config asks for {price[3] + 0.5:g}; changing a "
        "numeric feature's boundaries on an existing run is refused (it changes which values its embedding rows "
        "mean); keep the run's setting, or use a new run_dir"
    )
    standardized = copy.deepcopy(BUCKETED)
    standardized["numeric"][1] = {"name": "item_hist_ctr", "normalize": "standardize", "default": 0.08}
    config = config_file(tmp_path, funnel_root, {**OVERRIDES, "schema": standardized}, name="mode.yaml")
    code, err = _train(capsys, config, "--day", DAYS[2])
    assert (code, err) == (2, (
        f"mtlrec: error: {config}:{_line(config, 'normalize: standardize')}: schema.numeric[1].normalize: feature "
        f"'item_hist_ctr' was trained with normalize piecewise_linear in {run_dir}, the config asks for standardize; "
        "changing a numeric feature's normalize on an existing run is refused (it changes how the model reads its "
        "values); keep the run's setting, or use a new run_dir"
    ))
    finer = copy.deepcopy(BUCKETED)
    finer["numeric"][0]["num_buckets"] = 16
    config = config_file(tmp_path, funnel_root, {**OVERRIDES, "schema": finer}, name="finer.yaml")
    code, err = _train(capsys, config, "--day", DAYS[2])
    assert code == 2 and "schema.numeric[0].num_buckets: feature 'price' was trained with num_buckets 8 (boundaries [" in err
    assert "the config asks for 16; changing a numeric feature's num_buckets on an existing run is refused" in err
    assert (run_dir / "schema.json").read_text() == after_day_one
    assert RunState.load(run_dir).trained_days == DAYS[:2]
    # the same encoding given explicitly (the boundaries the run computed) is no change
    given = copy.deepcopy(BUCKETED)
    given["numeric"][0]["boundaries"] = price
    config = config_file(tmp_path, funnel_root, {**OVERRIDES, "schema": given}, name="given.yaml")
    schema, _ = resolve_schema(load_config(config), RunDirectory(run_dir), DAYS[2])
    assert schema == json.loads(after_day_one)


def test_a_constant_first_day_or_bad_boundaries_exit_2_naming_the_key(funnel_root, tmp_path, capsys):
    root = tmp_path / "data"
    day = root / f"dt={DAYS[0]}"
    day.mkdir(parents=True)
    table = pq.read_table(input_files(funnel_root / f"dt={DAYS[0]}")[0])
    constant = pa.array(np.full(table.num_rows, 3.5, np.float64))
    pq.write_table(table.set_column(table.schema.get_field_index("price"), "price", constant), day / "part-0.parquet")
    config = config_file(tmp_path, root, OVERRIDES)
    code, err = _train(capsys, config, "--day", DAYS[0])
    assert (code, err) == (2, (
        f"mtlrec: error: {config}:{_line(config, 'normalize: bucketize')}: schema.numeric[0].normalize: feature "
        "'price': expected values that give at least 1 quantile cut for normalize: bucketize, got 320 values where "
        "every value is 3.5 (constant); give boundaries, or another normalize (first training day 2024-01-01)"
    ))
    assert not (tmp_path / "run" / "schema.json").exists()
    bad = copy.deepcopy(BUCKETED)
    bad["numeric"][0]["boundaries"] = [10.0, 50.0, 20.0]
    config = config_file(tmp_path, funnel_root, {**OVERRIDES, "schema": bad}, name="bad.yaml")
    code, err = _train(capsys, config, "--day", DAYS[0])
    assert (code, err) == (2, (
        f"mtlrec: error: {config}:{_line(config, 'boundaries')}: schema.numeric[0].boundaries: expected strictly "
        "increasing numbers, got 20.0 after 50.0 at index 2"
    ))


#: The numeric features of the shared tiny config as mtlrec 0.4.0 wrote them to schema.json
#: (before numerics could be embeddings): no num_buckets, boundaries or dim keys.
OLD_NUMERIC_KEYS = [{"name", "dtype", "normalize", "default"}, {"name", "dtype", "normalize", "mean", "std", "default"}]


def test_a_run_directory_without_boundaries_still_loads(trained_run, tmp_path):
    config, trained_dir = trained_run
    saved = json.loads((trained_dir / "schema.json").read_text())
    assert [set(f) for f in saved["numeric"]] == OLD_NUMERIC_KEYS
    shutil.copytree(trained_dir, tmp_path / "run")
    run = RunDirectory(tmp_path / "run")
    schema, changes = resolve_schema(load_config(config), run, DAYS[2])
    assert schema == saved and changes == []
    model = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "model.keras", safe_mode=True)
    assert model.get_layer("feature_embedding").numeric_tables == {}
