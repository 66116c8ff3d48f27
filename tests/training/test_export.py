import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from mtlrec.training.serving.export import export_model, latest_export, read_metadata, versions
from mtlrec.training.serving.predict import input_files, predict_file


def _features(day_dir, schema, rows=50):
    """Raw model inputs of the first ``rows`` rows of a day, as the pipeline reads them."""
    from mtlrec.training.serving.predict import batch_inputs

    table = pq.read_table(input_files(day_dir)[0]).slice(0, rows)
    names = [f["name"] for s in ("categorical", "numeric", "sequence") for f in schema.get(s, [])]
    inputs = {}
    for section in ("categorical", "numeric", "sequence"):
        for f in schema.get(section, []):
            if section == "sequence":
                inputs[f["name"]] = {"dtype": f["dtype"], "shape": [None, f["max_len"]]}
            elif section == "numeric":
                inputs[f["name"]] = {"dtype": "float32", "shape": [None]}
            else:
                inputs[f["name"]] = {"dtype": f["dtype"], "shape": [None]}
    batch = table.select(names).to_batches()[0]
    return batch_inputs(batch, inputs, schema)


def test_export_reloads_in_a_fresh_process_with_the_same_predictions(trained_run, funnel_root, tiny, tmp_path):
    _, run_dir = trained_run
    export = latest_export(run_dir / "export")
    assert export.name == "2" and (export / "saved_model.pb").exists()
    meta = read_metadata(export)
    assert meta["trained_days"] == tiny.days[:2] and meta["key"] == "impression_id"
    features = _features(funnel_root / f"dt={tiny.days[3]}", meta["schema"])

    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    expected = {k: np.asarray(v) for k, v in model(features, training=False).items()}

    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **{k: (v.astype(str) if v.dtype == object else v) for k, v in features.items()})
    outputs = tmp_path / "outputs.npz"
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load({str(export)!r})
        serve = loaded.signatures["serving_default"]
        data = np.load({str(inputs)!r})
        out = serve(**{{k: tf.constant(data[k]) for k in data.files}})
        np.savez({str(outputs)!r}, **{{k: v.numpy() for k, v in out.items()}})
        print(sorted(sys.modules.keys() & {{"mtlrec", "keras"}}))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'mtlrec'" not in proc.stdout  # nothing of mtlrec was needed to serve
    served = np.load(outputs)
    assert set(served.files) == {"ctr", "cvr", "ctcvr"}
    for name in served.files:
        np.testing.assert_allclose(served[name], expected[name].reshape(-1), atol=1e-5)


def test_export_versions_are_atomic_and_pruned(trained_run, tmp_path):
    _, run_dir = trained_run
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    root = tmp_path / "export"
    (root / ".tmp-7.123").mkdir(parents=True)  # left by a killed writer
    for _ in range(3):
        export_model(model, root, keep=2, metadata={"note": "x"})
    assert versions(root) == [2, 3]
    assert sorted(p.name for p in root.iterdir()) == ["2", "3"]
    assert read_metadata(root / "3")["version"] == 3
    signature = tf.saved_model.load(str(root / "3")).signatures["serving_default"]
    assert signature.structured_input_signature[1]["user_id"].dtype == tf.int64
    assert signature.structured_input_signature[1]["scene"].dtype == tf.string
    assert signature.structured_input_signature[1]["hist_item_id"].shape.as_list() == [None, None]  # any length


def test_export_holds_each_variable_once(trained_run, tmp_path):
    _, run_dir = trained_run
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    path = export_model(model, tmp_path / "export", keep=1)
    saved = [
        (name, shape)
        for name, shape in tf.train.list_variables(str(path / "variables" / "variables"))
        if name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
    ]
    # every weight of the model once: no second copy of the tables under another key
    assert sorted(int(np.prod(shape)) for _, shape in saved) == sorted(
        int(np.prod(v.shape)) for v in model.variables
    )
    loaded = tf.saved_model.load(str(path))
    assert len(loaded.variables) == len(model.variables)


def test_predict_writes_one_row_per_input_row(trained_run, funnel_root, tiny, tmp_path):
    _, run_dir = trained_run
    export = latest_export(run_dir / "export")
    day = funnel_root / f"dt={tiny.days[3]}"
    out = tmp_path / "pred" / "scores.parquet"
    rows = predict_file(export, day, out, batch_size=100)  # 320 rows: 4 batches, a partial last
    table = pq.read_table(out)
    source = pq.read_table(input_files(day)[0])
    assert rows == table.num_rows == source.num_rows == tiny.rows
    assert table.column_names == ["impression_id", "ctcvr", "ctr", "cvr"]
    assert table.column("impression_id").to_pylist() == source.column("impression_id").to_pylist()
    ctr = np.asarray(table.column("ctr"))
    assert ((ctr > 0) & (ctr < 1)).all()
    np.testing.assert_allclose(
        np.asarray(table.column("ctcvr")), ctr * np.asarray(table.column("cvr")), rtol=1e-5, atol=1e-7
    )
    # the same rows scored through the in-process model
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    features = _features(day, read_metadata(export)["schema"], rows=30)
    np.testing.assert_allclose(ctr[:30], np.asarray(model(features)["ctr"]).reshape(-1), atol=1e-5)
    # predict reads raw columns exactly as the training pipeline does
    from mtlrec.data_pipeline import make_dataset

    batch, _ = next(iter(make_dataset(funnel_root, [tiny.days[3]], read_metadata(export)["schema"], batch_size=30, deterministic=True)))
    for name, value in batch.items():
        value = value.numpy()
        if value.dtype == object:  # tf.string -> bytes
            value = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value)
        np.testing.assert_array_equal(value, features[name], err_msg=name)
    assert [p.name for p in out.parent.iterdir()] == ["scores.parquet"]


def test_predict_reports_a_missing_column(trained_run, funnel_root, tiny, tmp_path):
    from mtlrec.data_pipeline import DataValidationError

    _, run_dir = trained_run
    source = pq.read_table(input_files(funnel_root / f"dt={tiny.days[3]}")[0]).drop(["scene"])
    bad = tmp_path / "bad.parquet"
    pq.write_table(source, bad)
    out = tmp_path / "scores.parquet"
    with pytest.raises(DataValidationError, match=r"bad\.parquet, column 'scene': missing"):
        predict_file(latest_export(run_dir / "export"), bad, out)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.parquet"]


def test_dupn_export_scores_candidates_against_one_representation(funnel_root, tmp_path):
    from mtlrec.data_pipeline import funnel_schema_dict
    from mtlrec.models import build_model

    schema = funnel_schema_dict(num_users=60, num_items=50, max_len=4, dim=4, property_dim=4)
    tasks = [{"name": "ctr", "label": "click"}, {"name": "follow", "label": "follow"}]
    model = build_model(
        {"type": "dupn", "lstm_units": 8, "attention_units": 8, "representation_dim": 8, "tower_units": [8], "seed": 3},
        schema,
        tasks,
    )
    export = export_model(model, tmp_path / "export", metadata={"schema": schema})
    loaded = tf.saved_model.load(str(export))
    assert {"serving_default", "user_representation", "score_items"} <= set(loaded.signatures)

    day = funnel_root / "dt=2024-01-01"
    features = _features(day, schema, rows=6)
    # one user against 6 candidate items: the user's features repeated on every row
    user_inputs = loaded.signatures["user_representation"].structured_input_signature[1]
    item_inputs = loaded.signatures["score_items"].structured_input_signature[1]
    rows = {k: np.repeat(v[:1], 6, axis=0) if k in user_inputs else v for k, v in features.items()}
    full = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in rows.items()})
    rep = loaded.signatures["user_representation"](**{k: tf.constant(rows[k][:1]) for k in user_inputs})
    assert rep["representation"].shape == (1, 8)
    scored = loaded.signatures["score_items"](
        representation=rep["representation"],
        **{k: tf.constant(rows[k]) for k in item_inputs if k != "representation"},
    )
    assert set(scored) == {"ctr"}
    np.testing.assert_allclose(scored["ctr"].numpy(), full["ctr"].numpy(), atol=1e-5)
    assert json.loads((export / "assets.extra" / "mtlrec.json").read_text())["signatures"]["score_items"]
