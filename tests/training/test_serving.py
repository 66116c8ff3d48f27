"""Serving an export as TF Serving does: id lists of any length, REST request bodies,
``saved_model_cli run`` and the warmup requests, all scoring as ``mtlrec predict``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from mtlrec.data_pipeline import make_dataset
from mtlrec.data_pipeline.recent_items import fit_padded
from mtlrec.training.serving.export import WARMUP_PATH, latest_export, read_metadata
from mtlrec.training.serving.predict import input_files, predict_file

DAY = "2024-02-01"


def test_fit_padded_keeps_the_most_recent_items_of_each_row():
    x = tf.constant([[5, 6, 7, -1, -1], [1, 2, 3, 4, 5], [-1, 9, -1, -1, -1], [-1, -1, -1, -1, -1]], tf.int64)
    np.testing.assert_array_equal(fit_padded(x, 3, -1), [[5, 6, 7], [3, 4, 5], [-1, 9, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(fit_padded(tf.zeros((2, 0), tf.int64), 2, -1), [[-1, -1], [-1, -1]])
    words = tf.constant([["a", "b", "c", ""], ["d", "", "", ""]])
    np.testing.assert_array_equal(fit_padded(words, 2, ""), [[b"b", b"c"], [b"d", b""]])


def _long_history_day(funnel_root, day, root):
    """Rows of ``day`` whose histories are made longer than max_len (4): older ids first."""
    table = pq.read_table(input_files(funnel_root / f"dt={day}")[0]).slice(0, 8)
    hist = table.column("hist_item_id").to_pylist()
    longer = [[900 + i, 901 + i, 902][: i % 4] + h for i, h in enumerate(hist)]
    longer[1] = []  # a row without history
    table = table.set_column(table.schema.get_field_index("hist_item_id"), "hist_item_id",
                             pa.array(longer, pa.list_(pa.int64())))
    out = root / f"dt={DAY}"
    out.mkdir(parents=True)
    pq.write_table(table, out / "part-0.parquet")
    return table


def _tensors(columns: dict, specs: dict) -> dict:
    """A REST body's values as TF Serving turns them into tensors: by the signature's dtypes."""
    return {name: tf.constant(np.array(values), dtype=specs[name].dtype) for name, values in columns.items()}


def test_rest_bodies_saved_model_cli_and_predict_score_the_same(trained_run, funnel_root, tiny, tmp_path):
    _, run_dir = trained_run
    export = latest_export(run_dir / "export")
    meta = read_metadata(export)
    table = _long_history_day(funnel_root, tiny.days[3], tmp_path / "data")
    assert max(len(h) for h in table.column("hist_item_id").to_pylist()) > 4

    # what training reads from these rows, scored by the trained Keras model
    features, _ = next(iter(make_dataset(tmp_path / "data", [DAY], meta["schema"], batch_size=8, deterministic=True)))
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    expected = {k: np.asarray(v).reshape(-1) for k, v in model(features, training=False).items() if k in ("ctr", "cvr", "ctcvr")}

    scores = tmp_path / "scores.parquet"
    assert predict_file(export, tmp_path / "data" / f"dt={DAY}", scores) == 8
    predicted = pq.read_table(scores)
    for name in expected:
        np.testing.assert_allclose(np.asarray(predicted.column(name)), expected[name], atol=1e-5, err_msg=name)

    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    rows = table.select(sorted(specs)).to_pylist()
    longest = max(len(r["hist_item_id"]) for r in rows)
    padded = [dict(r, hist_item_id=r["hist_item_id"] + [-1] * (longest - len(r["hist_item_id"]))) for r in rows]

    # TF Serving REST, row form: {"instances": [{feature: value, ...}, ...]}
    instances = json.loads(json.dumps({"instances": padded}))["instances"]
    out = serve(**_tensors({n: [r[n] for r in instances] for n in specs}, specs))
    # columnar form: {"inputs": {feature: [values of every row], ...}}
    inputs = json.loads(json.dumps({"inputs": {n: [r[n] for r in padded] for n in specs}}))["inputs"]
    columnar = serve(**_tensors(inputs, specs))
    # one row per request, each history only as long as its own items
    single = [serve(**_tensors({n: [r[n]] for n in specs}, specs)) for r in rows]
    for name in expected:
        np.testing.assert_allclose(out[name].numpy(), expected[name], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(columnar[name].numpy(), expected[name], atol=1e-5, err_msg=name)
        np.testing.assert_allclose([s[name].numpy()[0] for s in single], expected[name], atol=1e-5, err_msg=name)

    # saved_model_cli run, the rows as Python literals
    exprs = ";".join(f"{n}={[r[n] for r in padded]!r}" for n in sorted(specs))
    cli = Path(sys.executable).with_name("saved_model_cli")
    proc = subprocess.run(
        [str(cli), "run", "--dir", str(export), "--tag_set", "serve", "--signature_def", "serving_default",
         "--input_exprs", exprs, "--outdir", str(tmp_path / "cli")],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in expected:
        np.testing.assert_allclose(np.load(tmp_path / "cli" / f"{name}.npy"), expected[name], atol=1e-5, err_msg=name)


def test_each_export_carries_warmup_requests_of_the_training_day(trained_run, funnel_root):
    from tensorflow_serving.apis import prediction_log_pb2

    _, run_dir = trained_run
    export = latest_export(run_dir / "export")
    meta = read_metadata(export)
    path = export.joinpath(*WARMUP_PATH)
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
    assert len(logs) == 4  # one request per row (3 rows), then all of them
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    results = []
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default" and request.model_spec.name == meta["name"]
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        assert set(inputs) == set(serve.structured_input_signature[1])
        results.append((inputs, serve(**{n: tf.constant(v) for n, v in inputs.items()})))

    # the rows are the first rows of the day trained last, as the pipeline reads them
    features, _ = next(iter(make_dataset(funnel_root, [meta["day"]], meta["schema"], batch_size=3, deterministic=True)))
    batched, outputs = results[-1]
    for name, value in features.items():
        np.testing.assert_array_equal(batched[name], value.numpy(), err_msg=name)
    for i, (inputs, out) in enumerate(results[:-1]):
        assert inputs["hist_item_id"].shape[1] == int((features["hist_item_id"].numpy()[i] != -1).sum())
        for name in ("ctr", "cvr", "ctcvr"):
            assert out[name].shape == (1,)
            np.testing.assert_allclose(out[name].numpy()[0], outputs[name].numpy()[i], atol=1e-6)
