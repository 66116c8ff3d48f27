"""Runs whose histories are read by attention: what the run records, the refusal to change
a trained run's encoders, and exports that score histories of any length as
``mtlrec predict`` does, in a TensorFlow-only process."""

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

from mtlrec.training.config import ConfigError, load_config
from mtlrec.training.experiment import Experiment
from mtlrec.training.lookups.encoder_changes import check_encoders
from mtlrec.training.run.run_directory import RunDirectory
from mtlrec.training.run.run_state import RunState
from mtlrec.training.serving.export import latest_export
from mtlrec.training.serving.predict import input_files, predict_file

_spec = importlib.util.spec_from_file_location("mtlrec_training_conftest", Path(__file__).with_name("conftest.py"))
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
DAYS, SCHEMA, config_file = _conftest.DAYS, _conftest.SCHEMA, _conftest.config_file

#: the tiny schema with the candidate's category and a second behavior history
ENCODER_SCHEMA = copy.deepcopy(SCHEMA)
ENCODER_SCHEMA["categorical"].append({"name": "item_category", "dtype": "int64", "num_buckets": 16, "dim": 4})
ENCODER_SCHEMA["sequence"] += [
    {"name": "hist_category", "dtype": "int64", "max_len": 4, "shared_with": "item_category"},
    {"name": "hist_behavior", "dtype": "int64", "max_len": 4, "num_buckets": 8, "dim": 2},
]
SEQUENCES = [f["name"] for f in ENCODER_SCHEMA["sequence"]]

#: one history per run: item ids and categories (and, for the LSTM, the behavior type as its property)
HISTORIES = {
    "target_attention": {"encoder": "target_attention", "features": ["hist_item_id", "hist_category"],
                         "options": {"units": [6]}},
    "self_attention": {"encoder": "self_attention", "features": ["hist_item_id", "hist_category"],
                       "options": {"position_dim": 4, "num_heads": 2}},
    "property_gated_lstm": {"encoder": "property_gated_lstm",
                            "features": ["hist_item_id", "hist_category", "hist_behavior"],
                            "options": {"units": 4, "attention_units": 4}},
}


def _overrides(encoder, **history):
    return {"schema": ENCODER_SCHEMA, "model": {"sequence_encoders": {"clicks": {**HISTORIES[encoder], **history}}}}


@pytest.fixture(scope="module", params=sorted(HISTORIES))
def encoder_run(request, tmp_path_factory, funnel_root):
    """``(encoder, config path, run_dir)``: one day trained with the history read by ``encoder``."""
    directory = tmp_path_factory.mktemp(request.param)
    path = config_file(directory, funnel_root, _overrides(request.param))
    Experiment(load_config(path)).train(day=DAYS[0])
    keras.backend.clear_session()
    return request.param, path, directory / "run"


def _longer_histories(funnel_root, root):
    """Eight rows of day 4 whose histories (every sequence, alike) are made longer than max_len
    (4), left as they are, emptied, or cut to one item."""
    table = pq.read_table(input_files(funnel_root / f"dt={DAYS[3]}")[0]).slice(0, 8)
    columns = {name: table.column(name).to_pylist() for name in SEQUENCES}
    for i in range(8):
        for name, values in columns.items():
            h = values[i]
            if i % 4 == 1:
                values[i] = [900 + i + k for k in range(5 + i // 4)] + h  # longer than max_len
            elif i % 4 == 2:
                values[i] = []
            elif i % 4 == 3:
                values[i] = h[-1:]
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, pa.list_(pa.int64())))
    out = root / "dt=2024-02-01"
    out.mkdir(parents=True)
    pq.write_table(table, out / "part-0.parquet")
    return table, out


def test_export_scores_histories_of_any_length_as_predict_does_in_a_tensorflow_only_process(
    encoder_run, funnel_root, tmp_path
):
    encoder, _, run_dir = encoder_run
    export = latest_export(run_dir / "export")
    table, day_dir = _longer_histories(funnel_root, tmp_path / "data")
    lengths = {len(h) for h in table.column("hist_item_id").to_pylist()}
    assert min(lengths) == 0 and max(lengths) > 4 and len(lengths) >= 4

    scores = tmp_path / "scores.parquet"
    assert predict_file(export, day_dir, scores) == 8
    predicted = pq.read_table(scores)

    # the raw rows, each request padded only to its own length, and all rows in one request
    rows = table.to_pylist()
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps(rows))
    served = tmp_path / "served.json"
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        serve = tf.saved_model.load({str(export)!r}).signatures["serving_default"]
        specs = serve.structured_input_signature[1]
        rows = json.load(open({str(requests)!r}))

        def call(batch):
            inputs = {{}}
            for name, spec in specs.items():
                values = [r[name] for r in batch]
                if spec.shape.rank == 2:  # an id list: pad each request's rows to its longest
                    width = max(len(v) for v in values)
                    values = [v + [-1] * (width - len(v)) for v in values]
                inputs[name] = tf.constant(np.array(values), dtype=spec.dtype)
            return serve(**inputs)

        single = [call([r]) for r in rows]
        batched = call(rows)
        out = {{name: {{"single": [float(s[name].numpy()[0]) for s in single],
                        "batched": batched[name].numpy().tolist()}} for name in ("ctr", "cvr", "ctcvr")}}
        json.dump(out, open({str(served)!r}, "w"))
        print(sorted(sys.modules.keys() & {{"mtlrec", "keras"}}))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'mtlrec'" not in proc.stdout  # nothing of mtlrec was needed to serve
    out = json.loads(served.read_text())
    for name in ("ctr", "cvr", "ctcvr"):
        expected = np.asarray(predicted.column(name))
        assert np.ptp(expected) > 0, (encoder, name)
        np.testing.assert_allclose(out[name]["single"], expected, atol=1e-5, err_msg=f"{encoder} {name}")
        np.testing.assert_allclose(out[name]["batched"], expected, atol=1e-5, err_msg=f"{encoder} {name}")


def test_the_run_records_its_encoders_and_refuses_other_ones(encoder_run, tmp_path, funnel_root):
    encoder, path, run_dir = encoder_run
    recorded = RunState.load(run_dir).data["sequence_encoders"]
    assert list(recorded) == ["clicks"] and recorded["clicks"]["encoder"] == encoder
    assert recorded["clicks"]["query"] == ["item_id", "item_category"]
    copy_dir = tmp_path / "run"
    shutil.copytree(run_dir, copy_dir)

    setting = {"target_attention": ("units", [8]), "self_attention": ("num_layers", 2),
               "property_gated_lstm": ("units", 8)}[encoder]
    options = dict(HISTORIES[encoder]["options"], **{setting[0]: setting[1]})
    changed = config_file(tmp_path, funnel_root, {**_overrides(encoder, options=options), "run_dir": str(copy_dir)})
    line = next(i for i, text in enumerate(changed.read_text().splitlines(), 1) if text.strip().startswith(f"{setting[0]}:"))
    was = HISTORIES[encoder]["options"].get(setting[0], {"num_layers": 1}.get(setting[0]))
    message = (
        f"{changed}:{line}: model.sequence_encoders.clicks.options.{setting[0]}: history 'clicks' ({encoder}) was "
        f"trained with {setting[0]} {was!r}, the config asks for {setting[1]!r} in {copy_dir}; changing a trained "
        "run's sequence encoders is refused (its weights were trained for the encoders it was built with); keep "
        "them, or train into a new run_dir"
    )
    for command in (lambda e: e.train(day=DAYS[1]), lambda e: e.evaluate(DAYS[1]), lambda e: e.export()):
        with pytest.raises(ConfigError) as raised:
            command(Experiment(load_config(changed)))
        assert str(raised.value) == message

    # the history dropped from the config: its features would be mean-pooled alone
    dropped = config_file(tmp_path, funnel_root, {"schema": ENCODER_SCHEMA, "run_dir": str(copy_dir)}, name="mean.yaml")
    with pytest.raises(ConfigError, match=r"model.sequence_encoders: history 'clicks' \(" + encoder
                       + r" over hist_item_id, hist_category.*\) is not in the config"):
        Experiment(load_config(dropped)).train(day=DAYS[1])
    assert RunState.load(copy_dir).trained_days == [DAYS[0]]

    # the same encoders, their defaults written out or not: taken
    same = _overrides(encoder)
    same["model"]["sequence_encoders"]["clicks"] = recorded["clicks"]
    same = config_file(tmp_path, funnel_root, {**same, "run_dir": str(copy_dir)}, name="same.yaml")
    check_encoders(load_config(same), RunDirectory(copy_dir), RunState.load(copy_dir))
    check_encoders(load_config(path), RunDirectory(run_dir), RunState.load(run_dir))


def test_a_run_trained_before_encoders_takes_them_only_as_it_was(trained_run, tmp_path, funnel_root):
    _, run_dir = trained_run
    copy_dir = tmp_path / "run"
    shutil.copytree(run_dir, copy_dir)
    state = json.loads((copy_dir / "state.json").read_text())
    state.pop("sequence_encoders", None)  # as a run of an earlier mtlrec wrote it
    (copy_dir / "state.json").write_text(json.dumps(state))
    asked = config_file(tmp_path, funnel_root, {"run_dir": str(copy_dir),
                                                "model": {"sequence_encoders": {"hist_item_id": "mean"}}})
    with pytest.raises(ConfigError, match="history 'hist_item_id' was trained with hist_item_id mean-pooled alone "
                                          r"\(not in the run's sequence_encoders\), the config asks for mean"):
        Experiment(load_config(asked)).evaluate(DAYS[2])
    plain = config_file(tmp_path, funnel_root, {"run_dir": str(copy_dir)}, name="plain.yaml")
    result = Experiment(load_config(plain)).evaluate(DAYS[2])
    assert result is not None
    keras.backend.clear_session()
