import datetime
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest
import yaml

from mtlrec.conventions.key_paths import KeyPathError
from mtlrec.losses.loss_weighting import LossWeighting
from mtlrec.models import build_model
from mtlrec.schema import Schema
from mtlrec.conventions.specs import ModelSpec, OptimizerSpec, WeightingSpec
from mtlrec.tasks import Task
from mtlrec.training.config import (
    ConfigError,
    config_from_dict,
    load_config,
    load_configs,
    parse_days,
)

# Line numbers matter: the cases below expect errors at these lines.
BASE_YAML = """\
name: tiny
run_dir: run
data:
  root: data
  format: parquet
  funnel: [[click, conversion]]
schema:
  key: impression_id
  categorical:
    - {name: user_id, dtype: int64, num_buckets: 128, dim: 4}
    - {name: item_id, dtype: int64, num_buckets: 128, dim: 4}
  numeric:
    - {name: price, normalize: log1p}
  labels:
    - {name: click, kind: binary}
    - {name: conversion, kind: binary}
tasks:
  - {name: ctr, label: click}
  - {name: cvr, label: conversion, parent: ctr, joint: ctcvr}
model:
  type: esmm
  tower_units: [8]
optimizer:
  dense: {name: adam, learning_rate: 0.01}
  embedding: {name: lazy_adam, learning_rate: 0.01}
loss_weighting: {type: fixed}
training:
  batch_size: 64
  checkpoint_every: 2
evaluation:
  extras: [true_ctr]
export:
  keep: 2
"""


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_loads_with_defaults_and_resolves_paths(tmp_path):
    config = load_config(write(tmp_path, BASE_YAML))
    assert config.name == "tiny"
    assert config.run_dir == str(tmp_path / "run")
    assert config.data.root == str(tmp_path / "data")
    assert config.data.format == "parquet"
    assert config.training.batch_size == 64
    assert config.training.epochs_per_day == 1  # default
    assert config.training.steps_per_day is None
    assert config.evaluation.batch_size == 4096
    assert config.export.keep == 2
    assert config.tasks[1].parent == "ctr"
    assert config.model == {"type": "esmm", "tower_units": [8]}


def test_absolute_paths_and_default_run_dir(tmp_path):
    text = BASE_YAML.replace("run_dir: run\n", "").replace("root: data", f"root: {tmp_path}/abs")
    config = load_config(write(tmp_path, text))
    assert config.data.root == f"{tmp_path}/abs"
    assert config.run_dir == str(tmp_path / "runs" / "tiny")


def test_days_accept_unquoted_dates_ranges_and_lists(tmp_path):
    text = BASE_YAML.replace(
        "  format: parquet\n", "  format: parquet\n  train_days: 2024-01-01:2024-01-03\n  eval_day: 2024-01-04\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.data.train_days == "2024-01-01:2024-01-03"
    assert config.data.eval_day == "2024-01-04"  # YAML made a date of it
    text = BASE_YAML.replace("  format: parquet\n", "  format: parquet\n  train_days: [2024-01-02, 2024-01-01]\n")
    assert load_config(write(tmp_path, text)).data.train_days == ["2024-01-02", "2024-01-01"]
    assert parse_days(datetime.date(2024, 1, 5)) == ["2024-01-05"]
    with pytest.raises(ValueError, match="expected a day range"):
        parse_days("2024-01-03:2024-01-01")


def test_to_dict_round_trip(tmp_path):
    config = load_config(write(tmp_path, BASE_YAML))
    again = config_from_dict(config.to_dict(), base_dir=tmp_path)
    assert again.to_dict() == config.to_dict()


def test_multi_document_file(tmp_path):
    text = BASE_YAML + "---\n" + BASE_YAML.replace("name: tiny", "name: second")
    configs = load_configs(write(tmp_path, text))
    assert [c.name for c in configs] == ["tiny", "second"]
    with pytest.raises(ConfigError, match="expected one experiment in the file, found 2"):
        load_config(write(tmp_path, text))


def test_the_demo_config_is_valid(tmp_path):
    from mtlrec.training.demo import DEMO_CONFIG

    configs = load_configs(DEMO_CONFIG, base_dir=tmp_path)
    assert [c.model["type"] for c in configs] == ["esmm", "mmoe"]
    assert all(c.data.root == str(tmp_path / "data") for c in configs)


EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_shipped_experiment_configs_are_valid_and_build(path):
    from mtlrec.models import build_model

    config = load_config(path)
    assert config.model["type"] == path.stem
    assert config.data.root == str(path.parent.parent / "data" / "funnel")
    schema = config.to_dict()["schema"]
    for feature in schema["numeric"]:  # the trainer fills these from the first day
        if feature.get("normalize") == "standardize":
            feature.update(mean=0.08, std=0.05)
    model = build_model(config.model, schema, config.tasks)
    assert {t.name for t in config.tasks} <= set(model.output)


TASTE_EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "taste").glob("*.yaml"))


@pytest.mark.parametrize("path", TASTE_EXPERIMENTS, ids=[p.stem for p in TASTE_EXPERIMENTS])
def test_shipped_taste_experiments_read_what_the_generator_writes_through_attention(path):
    from mtlrec.data_pipeline import taste_schema_dict
    from mtlrec.layers import TargetAttention
    from mtlrec.models import build_model

    config = load_config(path)
    assert config.model["type"] == path.stem
    assert config.data.root == str(path.parents[2] / "data" / "taste")
    schema = config.to_dict()["schema"]
    assert schema == config_from_dict({**config.to_dict(), "schema": taste_schema_dict()}).to_dict()["schema"]
    model = build_model(config.model, schema, config.tasks)
    assert {t.name for t in config.tasks} <= set(model.output)
    assert any(isinstance(layer, TargetAttention) for layer in model._flatten_layers())


def test_one_config_per_model_is_shipped():
    stems = {p.stem for p in EXPERIMENTS}
    assert {"esmm", "mmoe", "ple", "shared_bottom", "cross_stitch", "dupn"} <= stems


def test_a_uri_data_root_is_kept_as_written(tmp_path):
    path = write(tmp_path, BASE_YAML.replace("root: data", "root: s3://bucket/days?region=eu-west-1"))
    assert load_config(path).data.root == "s3://bucket/days?region=eu-west-1"


@pytest.mark.parametrize("replace, line, message", [
    (("root: data", "root: foo://bucket/days"), 4,
     "data.root: expected a local path or a URI that pyarrow.fs reads (s3://, gs://, hdfs://, ...), "
     "got the unknown scheme 'foo' in 'foo://bucket/days'"),
    (("root: data", "root: s3://bucket/days?colour=red"), 4,
     "data.root: expected s3:// options that pyarrow.fs accepts: Unexpected query parameter in S3 URI: 'colour'"),
    (("root: data", "root: s3://KEY:SECRET@bucket/days"), 4,
     "data.root: expected a URI without credentials (give them in the environment, e.g. "
     "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), got a s3:// URI with user info"),
    (("root: data\n  format: parquet", "root: s3://bucket/days\n  format: tfrecord"), 5,
     "data.format: expected parquet for a s3:// data.root (TensorFlow 2.21.0 reads TFRecord files only "
     "from local paths and file://, gs://, ram://; convert the days to Parquet or mount the storage), got tfrecord"),
    (("run_dir: run", "run_dir: gs://b/run"), 2,
     "run_dir: expected a local or mounted path, got the URI 'gs://b/run' (a run directory is locked and "
     "written by atomic renames, which gs:// cannot do; mount the storage and give its path)"),
])
def test_a_location_that_cannot_work_is_refused_naming_the_key(tmp_path, replace, line, message):
    path = write(tmp_path, BASE_YAML.replace(*replace))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:{line}: {message}"


# (replace this, with that) in BASE_YAML -> (line, message pattern)
BAD = {
    "unknown_top_key": (("export:\n  keep: 2\n", "export:\n  keep: 2\ncolour: red\n"), 34, r"colour: unknown key; expected one of name, data"),
    "unknown_nested_key": (("checkpoint_every", "checkpoint_evry"), 29, r"training\.checkpoint_evry: unknown key; expected one of batch_size"),
    "wrong_type": (("batch_size: 64", "batch_size: big"), 28, r"training\.batch_size: expected a positive integer, got 'big'"),
    "non_positive": (("keep: 2", "keep: 0"), 33, r"export\.keep: expected a positive integer, got 0"),
    "unknown_model_type": (("type: esmm", "type: esmn"), 21, r"model\.type: expected one of .*esmm.*got 'esmn'"),
    "label_not_in_schema": (("label: conversion,", "label: purchase,"), 19, r"tasks\[1\]\.label.*'purchase' is not a label of the schema"),
    "hyperparameter_type": (("tower_units: [8]", "tower_units: 8"), 22, r"model\.tower_units: expected a list, got 8"),
    "unknown_hyperparameter": (("tower_units: [8]\n", "tower_units: [8]\n  num_experts: 4\n"), 23, r"model\.num_experts: unknown hyperparameter of model type 'esmm'"),
    "schema_value": (("num_buckets: 128, dim: 4}\n    - {name: item_id", "num_buckets: 0, dim: 4}\n    - {name: item_id"), 10, r"schema\.categorical\[0\]\.num_buckets"),
    "half_life": (("{name: item_id, dtype: int64, num_buckets: 128, dim: 4}", "{name: item_id, dtype: int64, num_buckets: 128, dim: 4, lookup: dynamic, count_half_life_days: 0}"), 11, r"^\S+:11: schema\.categorical\[1\]\.count_half_life_days: expected a positive integer, got 0$"),
    "max_waiting": (("{name: item_id, dtype: int64, num_buckets: 128, dim: 4}", "{name: item_id, dtype: int64, num_buckets: 128, dim: 4, max_waiting: 10}"), 11, r"^\S+:11: schema\.categorical\[1\]\.max_waiting: only allowed with lookup: dynamic, got lookup 'hash'$"),
    "optimizer_name": (("name: lazy_adam,", "name: lazy_adamw,"), 25, r"optimizer\.embedding\.name: expected one of"),
    "funnel_label": (("[[click, conversion]]", "[[click, purchase]]"), 6, r"data\.funnel\[0\]: 'purchase' is not a label"),
    "format": (("format: parquet", "format: csv"), 5, r"data\.format: expected one of parquet, tfrecord, got 'csv'"),
    "weighting_type": (("{type: fixed}", "{type: fancy}"), 26, r"loss_weighting\.type: expected one of fixed"),
    "bad_day": (("  format: parquet\n", "  format: parquet\n  train_days: 2024-13-01:2024-01-02\n"), 6, r"data\.train_days: expected a day range"),
    "yaml_syntax": (("batch_size: 64", "batch_size: [64"), None, r"invalid YAML: "),
    "metabalance_target": (("{type: fixed}", "{type: metabalance, target: purchase}"), 26, r"loss_weighting\.target: Expected target to be one of the task names \['ctr', 'cvr'\]\. Received: target='purchase'"),
    "gate_option": (("type: esmm\n  tower_units: [8]", "type: mmoe\n  gate: {type: dselect_k, k: 0}"), 22, r"model\.gate\.k: Expected k to be an integer >= 1\. Received: k=0"),
    "gate_type": (("type: esmm\n  tower_units: [8]", "type: ple\n  gate: {type: top_k}"), 22, r"model\.gate\.type: expected one of softmax, dselect_k, got 'top_k'"),
    "section_type": (("evaluation:\n  extras: [true_ctr]", "evaluation: fast"), 30, r"evaluation: expected a mapping with keys batch_size, extras, got 'fast'"),
}


def test_bad_config_names_the_key_path_and_line(tmp_path, subtests):
    for case in sorted(BAD):
        with subtests.test(case=case):
            (old, new), line, pattern = BAD[case]
            assert old in BASE_YAML
            path = write(tmp_path, BASE_YAML.replace(old, new, 1), name=f"{case}.yaml")
            with pytest.raises(ConfigError, match=pattern) as info:
                load_config(path)
            message = str(info.value)
            assert "\n" not in message
            if line is not None:
                assert message.startswith(f"{path}:{line}: ")
            else:  # a YAML error still points at a line
                assert message.startswith(f"{path}:") and message[len(str(path)) + 1:].split(":")[0].isdigit()


def test_missing_section_and_missing_file(tmp_path):
    text = BASE_YAML.replace("model:\n  type: esmm\n  tower_units: [8]\n", "")
    with pytest.raises(ConfigError, match=r"exp\.yaml: model: required key is missing"):
        load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_no_code_is_evaluated(tmp_path):
    text = BASE_YAML.replace("name: tiny", "name: !!python/object/apply:os.system ['echo hacked']")
    with pytest.raises(ConfigError, match="invalid YAML: could not determine a constructor"):
        load_config(write(tmp_path, text))
    assert yaml.safe_load("a: 1") == {"a": 1}


def test_funnel_defaults_to_click_conversion_only_when_the_schema_has_both(tmp_path):
    without = BASE_YAML.replace("  funnel: [[click, conversion]]\n", "")
    assert load_config(write(tmp_path, without)).data.funnel == [["click", "conversion"]]

    d = yaml.safe_load(without)
    d["schema"]["labels"] = [{"name": "y_a", "kind": "regression"}, {"name": "y_b", "kind": "regression"}]
    d["tasks"] = [{"name": "a", "label": "y_a", "kind": "regression"}, {"name": "b", "label": "y_b", "kind": "regression"}]
    d["model"] = {"type": "shared_bottom", "bottom_units": [8]}
    d["evaluation"] = {}
    config = config_from_dict(d, base_dir=tmp_path)
    assert config.data.funnel == []

    d["data"]["funnel"] = [["click", "conversion"]]  # set explicitly, it is checked
    with pytest.raises(ConfigError, match=r"data\.funnel\[0\]: 'click' is not a label"):
        config_from_dict(d, base_dir=tmp_path)


def test_funnel_defaults_to_the_label_pairs_of_the_tasks_parents_and_the_check_fires(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mtlrec.data_pipeline import DataValidationError
    from mtlrec.training.days.day_validation import validate_days

    d = yaml.safe_load(BASE_YAML.replace("  funnel: [[click, conversion]]\n", ""))
    d["data"]["root"] = str(tmp_path / "data")
    d["schema"]["labels"] = [{"name": "clk", "kind": "binary"}, {"name": "buy", "kind": "binary"}]
    d["tasks"] = [{"name": "ctr", "label": "clk"}, {"name": "cvr", "label": "buy", "parent": "ctr", "joint": "ctcvr"}]
    config = config_from_dict(d, base_dir=tmp_path)
    assert config.data.funnel == [["clk", "buy"]]

    day = tmp_path / "data" / "dt=2024-01-01"
    day.mkdir(parents=True)
    pq.write_table(pa.table({
        "impression_id": pa.array([1, 2, 3, 4], pa.int64()),
        "user_id": pa.array([1, 2, 3, 4], pa.int64()),
        "item_id": pa.array([5, 6, 7, 8], pa.int64()),
        "price": pa.array([1.0, 2.0, 3.0, 4.0], pa.float32()),
        "clk": pa.array([1, 0, 0, 1], pa.int64()),
        "buy": pa.array([1, 0, 1, 0], pa.int64()),  # row 2 buys without a click
    }), day / "part-00000.parquet")
    with pytest.raises(DataValidationError, match=r"column 'buy': funnel inconsistency: buy=1 with clk=0 at row 2"):
        validate_days(config, None, ["2024-01-01"])

    d["data"]["funnel"] = []  # set explicitly: no check
    assert validate_days(config_from_dict(d, base_dir=tmp_path), None, ["2024-01-01"])["2024-01-01"].rows == 4

    # three steps: each task with a parent gives its pair, the schema's click/conversion is kept
    del d["data"]["funnel"]
    d["schema"]["labels"] += [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}]
    d["tasks"] = [{"name": "vtr", "label": "click"}, {"name": "ctr", "label": "clk", "parent": "vtr"},
                  {"name": "cvr", "label": "buy", "parent": "ctr"}, {"name": "other", "label": "conversion"}]
    d["model"] = {"type": "shared_bottom", "bottom_units": [8]}
    assert config_from_dict(d, base_dir=tmp_path).data.funnel == [["click", "clk"], ["clk", "buy"], ["click", "conversion"]]


def test_numbers_read_as_yaml_1_2_writes_them(tmp_path):
    text = BASE_YAML.replace("dense: {name: adam, learning_rate: 0.01}", "dense: {name: adam, learning_rate: 1e-3}")
    text = text.replace("embedding: {name: lazy_adam, learning_rate: 0.01}", "embedding: {name: lazy_adam, learning_rate: .5}")
    text = text.replace("  batch_size: 64\n", "  batch_size: 64\n  shuffle_buffer: 100\n")
    config = load_config(write(tmp_path, text))
    assert config.optimizer.dense["learning_rate"] == 0.001
    assert config.optimizer.embedding["learning_rate"] == 0.5

    from mtlrec.conventions import yaml_loader

    assert yaml_loader.load("[1e-3, 1E3, 2e+5, -.5, +1.5e3, .inf, 10, 1_000, 0x1f, '1e3', fast, 1e, e3]") == [
        0.001, 1000.0, 200000.0, -0.5, 1500.0, float("inf"), 10, 1000, 31, "1e3", "fast", "1e", "e3"
    ]
    assert yaml_loader.load("2024-01-01") == datetime.date(2024, 1, 1)


def test_a_word_where_a_number_is_expected_is_still_refused(tmp_path):
    text = BASE_YAML.replace("dense: {name: adam, learning_rate: 0.01}", "dense: {name: adam, learning_rate: fast}")
    with pytest.raises(ConfigError, match=r"exp\.yaml:24: optimizer\.dense\.learning_rate: expected a positive number, got 'fast'"):
        load_config(write(tmp_path, text))


# ------------------------------------------------ the typed tree (nothing built while loading)

# A config whose weighting (uncertainty: a variable), gate (dselect_k) and optimizers
# (adam, lazy_adam) would each create TensorFlow state if built.
BUILDING_YAML = BASE_YAML.replace(
    "type: esmm\n  tower_units: [8]", "type: mmoe\n  gate: {type: dselect_k, k: 1}"
).replace("{type: fixed}", "{type: uncertainty, init_log_var: 0.5}")


def test_loading_builds_no_optimizer_weighting_or_variable(tmp_path, monkeypatch):
    def refuse(what):
        def init(*args, **kwargs):
            raise AssertionError(f"loading a config built a {what}")

        return init

    monkeypatch.setattr(keras.optimizers.Optimizer, "__init__", refuse("optimizer"))
    monkeypatch.setattr(LossWeighting, "__init__", refuse("loss weighting"))
    monkeypatch.setattr(keras.Variable, "__init__", refuse("variable"))
    config = load_config(write(tmp_path, BUILDING_YAML))
    assert config.loss_weighting.type == "uncertainty"
    assert config.optimizer.embedding.name == "lazy_adam"


def test_loading_runs_nothing_of_tensorflow(tmp_path):
    """In a fresh process: after loading, TensorFlow's eager context is still
    uninitialised, so a MultiWorkerMirroredStrategy can still be created."""
    path = write(tmp_path, BUILDING_YAML)
    code = textwrap.dedent(f"""
        from tensorflow.python.eager import context
        from mtlrec.training.config import load_config
        load_config({str(path)!r})
        print("initialized", context.context()._initialized)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "initialized False"


def test_sections_are_typed(tmp_path):
    config = load_config(write(tmp_path, BUILDING_YAML))
    assert isinstance(config.schema, Schema)
    assert [f.name for f in config.schema.categorical] == ["user_id", "item_id"]
    assert all(isinstance(t, Task) for t in config.tasks)
    assert [(t.name, t.parent, t.joint_name) for t in config.tasks] == [("ctr", None, None), ("cvr", "ctr", "ctcvr")]
    assert isinstance(config.model, ModelSpec)
    assert (config.model.type, config.model.args) == ("mmoe", {"gate": {"type": "dselect_k", "k": 1}})
    assert isinstance(config.loss_weighting, WeightingSpec)
    assert (config.loss_weighting.type, config.loss_weighting.args) == ("uncertainty", {"init_log_var": 0.5})
    assert isinstance(config.optimizer.dense, OptimizerSpec)
    assert (config.optimizer.dense.name, config.optimizer.dense.args) == ("adam", {"learning_rate": 0.01})
    # read as mappings, the specs are the sections as written
    assert config.model == {"type": "mmoe", "gate": {"type": "dselect_k", "k": 1}}
    assert dict(config.loss_weighting) == {"type": "uncertainty", "init_log_var": 0.5}


def test_to_dict_gives_the_sections_as_written(tmp_path):
    raw = yaml.safe_load(BUILDING_YAML)
    data = load_config(write(tmp_path, BUILDING_YAML)).to_dict()
    for key in ("schema", "tasks", "model", "optimizer", "loss_weighting"):
        assert data[key] == raw[key], key
    assert data["training"]["batch_size"] == 64 and data["training"]["seed"] == 0


def test_training_digest_is_the_one_runs_were_written_with(tmp_path):
    # run directories store this digest; it was computed with the config module before
    # the typed tree (main at 479db59) for the same file
    config = load_config(write(tmp_path, BUILDING_YAML.replace("type: mmoe\n  gate: {type: dselect_k, k: 1}", "type: esmm\n  tower_units: [8]")))
    assert config.training_digest() == "be1806117494c105"


@pytest.mark.parametrize(
    "old, new, line, message",
    [
        ("gate: {type: dselect_k, k: 1}", "gate: {type: dselect_k, k: 1, gamma: -1}", 22,
         "model.gate.gamma: Expected gamma to be a positive number. Received: gamma=-1"),
        ("{type: uncertainty, init_log_var: 0.5}", "{type: gradnorm, alpha: -1}", 26,
         "loss_weighting.alpha: Expected alpha to be a non-negative number. Received: alpha=-1"),
        ("{type: uncertainty, init_log_var: 0.5}", "\n  type: pcgrad\n  seed: 1.5", 28,
         "loss_weighting.seed: Expected seed to be an integer or None. Received: seed=1.5"),
        ("embedding: {name: lazy_adam, learning_rate: 0.01}", "embedding: {name: lazy_adam, beta_1: high}", 25,
         "optimizer.embedding.beta_1: expected a number, got 'high'"),
        ("lookup_placeholder", None, 10,
         "schema.categorical[0].lookup: expected one of hash, identity, dynamic, got 'exact'"),
    ],
)
def test_a_deep_error_names_file_line_and_key_path(tmp_path, old, new, line, message):
    text = BUILDING_YAML
    if old == "lookup_placeholder":
        text = text.replace("num_buckets: 128, dim: 4}", "num_buckets: 128, dim: 4, lookup: exact}", 1)
    else:
        assert old in text
        text = text.replace(old, new)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:{line}: {message}"


def test_a_value_only_the_model_judges_names_its_key_by_the_argument():
    schema, tasks = yaml.safe_load(BASE_YAML)["schema"], [{"name": "ctr", "label": "click"}]
    with pytest.raises(KeyPathError) as info:
        build_model({"type": "mmoe", "num_experts": 0}, schema, tasks)
    assert info.value.path == "model.num_experts"
    assert str(info.value) == "model.num_experts: Expected num_experts to be an integer >= 1. Received: num_experts=0"
    with pytest.raises(KeyPathError) as info:
        build_model({"type": "mmoe", "gate": {"type": "dselect_k", "k": 0}}, schema, tasks)
    assert info.value.path == "model.gate.k"


def test_a_config_dict_loads_like_the_file(tmp_path):
    d = yaml.safe_load(BUILDING_YAML)
    config = config_from_dict(d, base_dir=tmp_path)
    assert config.model.type == "mmoe" and config.tasks[1].joint == "ctcvr"
    d["loss_weighting"] = {"init_log_var": 0.5}
    with pytest.raises(ConfigError, match=r"^config: loss_weighting\.type: required key is missing$"):
        config_from_dict(d, base_dir=tmp_path)
