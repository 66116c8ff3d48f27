"""The Python API guide's example (a model trained from a pandas DataFrame, evaluated, saved
and exported) runs as written, and what it saves and exports gives the model's answers."""

import pathlib
import re

import keras
import numpy as np
import tensorflow as tf

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "guide" / "python-api.md"
HEADING = "### Training a model with Keras: from a pandas DataFrame"


def _example():
    section = GUIDE.read_text(encoding="utf-8").split(HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section holds one python example"
    return blocks[0]


def test_dataframe_example_trains_evaluates_saves_and_exports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "guide_example"}
    exec(compile(_example(), str(GUIDE), "exec"), namespace)
    model, test, columns = namespace["model"], namespace["test"], namespace["columns"]
    features = columns(test, namespace["features"])

    printed = capsys.readouterr().out
    scores = eval(printed.strip().splitlines()[-1])  # the evaluate() dict the example prints
    assert set(scores) == {"loss", "ctr_loss", "cvr_loss", "ctr_auc", "cvr_auc", "ctcvr_auc"}
    assert scores["ctr_auc"] > 0.6  # the scene and the item set the click rate

    expected = {k: keras.ops.convert_to_numpy(v) for k, v in model.predict(features, verbose=0).items()}
    loaded = keras.saving.load_model(tmp_path / "esmm.keras", safe_mode=True)
    assert loaded.compiled and loaded.optimizer.iterations.numpy() == model.optimizer.iterations.numpy()
    again = loaded.predict(features, verbose=0)
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(again[name]), expected[name])

    assert pathlib.Path(namespace["export"]).resolve() == (tmp_path / "export" / "1").resolve()
    serve = tf.saved_model.load(str(namespace["export"])).signatures["serving_default"]
    served = serve(**{k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in features.items()})
    assert set(served) == {"ctr", "cvr", "ctcvr"}
    for name in served:
        np.testing.assert_allclose(served[name].numpy(), expected[name], atol=1e-6)
