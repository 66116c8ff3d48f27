import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlrec.training.config import load_config
from mtlrec.training.errors import NonFiniteLossError, RunError
from mtlrec.training.experiment import Experiment
from mtlrec.training.serving.export import versions
from mtlrec.training.run.metrics_log import read_metrics
from mtlrec.training.run.run_state import RunState


@pytest.fixture(autouse=True)
def _facts(tiny):
    global DAYS, ROWS, STEPS_PER_DAY
    DAYS, ROWS, STEPS_PER_DAY = tiny.days, tiny.rows, tiny.steps_per_day


def _tensorboard_scalars(directory):
    """Tags of the scalar summaries (``scalars`` plugin) in a TensorBoard log directory."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    tags = set()
    for path in directory.glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars" and value.tensor.dtype == 1:
                    tags.add(value.tag)
    return tags


def test_one_shot_run_writes_the_whole_run_directory(trained_run):
    _, run_dir = trained_run
    state = RunState.load(run_dir)
    assert state.trained_days == DAYS[:2]
    assert [e["steps"] for e in state.days] == [STEPS_PER_DAY] * 2
    assert [e["examples"] for e in state.days] == [ROWS] * 2
    assert [e["eval_day"] for e in state.days] == DAYS[1:3]
    assert state.global_step == 2 * STEPS_PER_DAY
    assert state.pending is None
    # checkpoints: the last two, the newest at the end of day 2
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*"))
    assert len(checkpoints) == 2
    meta = json.loads((run_dir / "checkpoints" / checkpoints[-1] / "meta.json").read_text())
    assert (meta["day"], meta["completed"], meta["global_step"]) == (DAYS[1], True, 2 * STEPS_PER_DAY)
    # metrics.csv: per day and task, evaluated on the following day
    rows = read_metrics(run_dir)
    auc = {(r["day"], r["task"]): r["value"] for r in rows if r["metric"] == "auc"}
    assert set(auc) == {(d, t) for d in DAYS[:2] for t in ("ctr", "cvr", "ctcvr")}
    assert all(0.0 <= v <= 1.0 for v in auc.values())
    losses = {(r["day"], r["task"]) for r in rows if r["metric"] == "train_loss"}
    assert {(DAYS[0], "ctr"), (DAYS[0], "cvr"), (DAYS[0], "all")} <= losses
    assert {r["step"] for r in rows if r["day"] == DAYS[1]} == {2 * STEPS_PER_DAY}
    # one export per day (keep: 2), TensorBoard events, the .keras model, the schema with stats
    assert versions(run_dir / "export") == [1, 2]
    tags = _tensorboard_scalars(run_dir / "tensorboard")
    assert {"train/loss", "train/examples_per_second", "eval/ctr/auc", "day/train_loss"} <= tags
    schema = json.loads((run_dir / "schema.json").read_text())
    ctr_stats = next(f for f in schema["numeric"] if f["name"] == "item_hist_ctr")
    assert ctr_stats["mean"] > 0 and ctr_stats["std"] > 0
    model = keras.saving.load_model(run_dir / "checkpoints" / "model.keras", safe_mode=True)
    assert isinstance(model.output, dict) and model.probability_names() == ["ctr", "cvr", "ctcvr"]
    assert set(model.output) == {"ctr", "cvr", "ctcvr", "ctr_logit", "cvr_logit", "ctcvr_logit"}
    assert not [p for p in run_dir.rglob(".tmp-*")]


def test_daily_increments_equal_one_shot_and_retraining_is_refused(trained_run, write_config):
    path = write_config()
    Experiment(load_config(path)).train(day=DAYS[0])
    Experiment(load_config(path)).train(day=DAYS[1])
    run_dir = path.parent / "run"
    state, one_shot = RunState.load(run_dir), RunState.load(trained_run[1])
    assert state.trained_days == one_shot.trained_days == DAYS[:2]
    assert state.global_step == one_shot.global_step == 2 * STEPS_PER_DAY
    assert [(e["day"], e["steps"], e["examples"]) for e in state.days] == [
        (e["day"], e["steps"], e["examples"]) for e in one_shot.days
    ]
    assert versions(run_dir / "export") == [1, 2]

    before = (run_dir / "state.json").read_text()
    with pytest.raises(RunError, match=rf"day {DAYS[0]} is already trained in .* pass --force"):
        Experiment(load_config(path)).train(days=f"{DAYS[0]}:{DAYS[2]}")
    assert (run_dir / "state.json").read_text() == before
    assert versions(run_dir / "export") == [1, 2]

    Experiment(load_config(path)).train(day=DAYS[1], force=True)
    state = RunState.load(run_dir)
    assert state.trained_days == DAYS[:2]
    assert state.entry(DAYS[1])["times_trained"] == 2
    assert state.entry(DAYS[1])["steps"] == 2 * STEPS_PER_DAY
    assert state.global_step == 3 * STEPS_PER_DAY
    assert versions(run_dir / "export") == [2, 3]


def test_non_finite_loss_stops_the_day_and_exports_nothing(write_config, monkeypatch):
    from mtlrec.training import trainer as trainer_module

    real_build = trainer_module.Trainer._build_step

    def poisoned_build(self, element_spec=None):
        step = real_build(self, element_spec)
        calls = {"n": 0}

        def poisoned(features, labels):
            total, per_task, batch, global_step = step(features, labels)
            calls["n"] += 1
            if calls["n"] == 3:
                total = total * float("nan")
            return total, per_task, batch, global_step

        return poisoned

    monkeypatch.setattr(trainer_module.Trainer, "_build_step", poisoned_build)
    path = write_config()
    with pytest.raises(NonFiniteLossError, match=rf"non-finite loss on day {DAYS[0]} at step 3 of the day") as info:
        Experiment(load_config(path)).train(day=DAYS[0])
    assert info.value.day == DAYS[0] and info.value.day_step == 3
    run_dir = path.parent / "run"
    assert versions(run_dir / "export") == []
    assert RunState.load(run_dir).trained_days == []
    checkpoints = sorted((run_dir / "checkpoints").glob("ckpt-*"))
    meta = json.loads((checkpoints[-1] / "meta.json").read_text())
    assert (meta["steps"], meta["completed"]) == (2, False)  # the last good one, before the NaN
    assert not (run_dir / "metrics.csv").exists()


def test_bad_data_is_reported_before_anything_is_written(write_config, funnel_root):
    from mtlrec.data_pipeline import DataValidationError

    path = write_config()
    with pytest.raises(DataValidationError, match="2030-01-01"):
        Experiment(load_config(path)).train(day="2030-01-01")
    bad = write_config({"model": {"tower_units": [-3]}}, name="bad.yaml")
    from mtlrec.training.errors import ConfigError

    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: model\.tower_units: .*-3"):
        Experiment(load_config(bad)).train(day=DAYS[0])
    run_dir = path.parent / "run"
    assert not (run_dir / "state.json").exists()
    assert not (run_dir / "checkpoints").exists() or not list((run_dir / "checkpoints").iterdir())


def test_a_run_directory_is_used_by_one_process_at_a_time(write_config):
    path = write_config()
    holder = Experiment(load_config(path))
    with holder.run.locked():
        with pytest.raises(RunError, match="another mtlrec process is using this run directory"):
            Experiment(load_config(path)).train(day=DAYS[0])
    assert not (path.parent / "run" / "state.json").exists()


def test_the_step_is_traced_once_for_full_and_short_batches(write_config):
    # 320 rows in batches of 96: three full batches and a short one of 32, on each of two
    # days; the step's input signature leaves the batch size free, so one trace serves all.
    path = write_config({"training": {"batch_size": 96}})
    experiment = Experiment(load_config(path))
    experiment.train(days=f"{DAYS[0]}:{DAYS[1]}")
    steps = experiment.trainer._step_fns
    assert len(steps) == 1
    (step,) = steps.values()
    assert step.experimental_get_tracing_count() == 1
    state = RunState.load(path.parent / "run")
    assert [e["steps"] for e in state.days] == [4, 4]
    assert [e["examples"] for e in state.days] == [ROWS, ROWS]
    assert state.global_step == int(experiment.trainer.global_step.numpy()) == 8


def test_a_day_ending_on_a_periodic_checkpoint_writes_it_once(write_config):
    path = write_config({"training": {"checkpoint_every": STEPS_PER_DAY}})
    Experiment(load_config(path)).train(day=DAYS[0])
    checkpoints = sorted((path.parent / "run" / "checkpoints").glob("ckpt-*"))
    assert [p.name for p in checkpoints] == ["ckpt-000001"]
    meta = json.loads((checkpoints[0] / "meta.json").read_text())
    assert (meta["day"], meta["steps"], meta["global_step"], meta["completed"]) == (
        DAYS[0], STEPS_PER_DAY, STEPS_PER_DAY, True
    )
    # the next day resumes from it as from any end-of-day checkpoint
    Experiment(load_config(path)).train(day=DAYS[1])
    assert RunState.load(path.parent / "run").global_step == 2 * STEPS_PER_DAY


def test_a_finished_day_asked_again_with_the_same_config_is_done(write_config):
    path = write_config()
    Experiment(load_config(path)).train(day=DAYS[0])
    run_dir = path.parent / "run"
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    assert Experiment(load_config(path)).train(day=DAYS[0]) == []
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    assert RunState.load(run_dir).entry(DAYS[0])["config"] == load_config(path).training_digest()

    # evaluation and export settings and paths do not change what was trained
    same = write_config({"evaluation": {"batch_size": 128}, "export": {"keep": 5}}, name="same.yaml")
    assert Experiment(load_config(same), run_dir=run_dir).train(day=DAYS[0]) == []
    changed = write_config({"optimizer": {"dense": {"learning_rate": 0.02}}}, name="changed.yaml")
    with pytest.raises(RunError, match=rf"day {DAYS[0]} is already trained in .* with a config that differs from this one; pass --force"):
        Experiment(load_config(changed), run_dir=run_dir).train(day=DAYS[0])
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    entries = Experiment(load_config(path)).train(day=DAYS[0], force=True)
    assert [e["times_trained"] for e in entries] == [2]


def test_progress_lines_add_up_and_name_the_joint_loss(write_config, caplog):
    import logging
    import re

    from mtlrec.training.report import _loss_names

    path = write_config({"training": {"log_every": 2}})
    with caplog.at_level(logging.INFO, logger="mtlrec"):
        Experiment(load_config(path)).train(day=DAYS[0])
    lines = [r.getMessage() for r in caplog.records if "examples/s" in r.getMessage()]
    assert len(lines) == STEPS_PER_DAY // 2
    for line in lines:
        total, ctr, ctcvr = map(float, re.search(r"loss (\S+) \(ctr (\S+) ctcvr (\S+)\)", line).groups())
        assert total == pytest.approx(ctr + ctcvr, abs=2e-4)  # fixed weights 1: the same window's sum
    # rows done of the day's validated rows, and the time left at the rate so far
    for i, line in enumerate(lines, 1):
        assert re.search(rf"examples/s, {2 * i * 64}/{ROWS} rows, \d\d:\d\d left$", line), line
    assert _loss_names(path.parent / "run") == {"ctr": "ctr", "cvr": "ctcvr"}


def test_state_records_each_days_distinct_ids_against_its_buckets(trained_run, funnel_root):
    import pyarrow.parquet as pq

    _, run_dir = trained_run
    for entry in RunState.load(run_dir).days:
        table = pq.read_table(funnel_root / f"dt={entry['day']}")
        users = set(table.column("user_id").to_pylist())
        items = set(table.column("item_id").to_pylist())
        items |= {i for seq in table.column("hist_item_id").to_pylist() for i in seq or ()}
        report = entry["id_collisions"]
        assert report["user_id"]["distinct_ids"] == len(users)
        assert report["item_id"]["distinct_ids"] == len(items)
        assert report["item_id"]["features"] == ["item_id", "hist_item_id"]
        assert report["user_id"]["num_buckets"] == 128
        share = 1 - (1 - 1 / 128) ** (len(users) - 1)
        assert report["user_id"]["expected_shared_share"] == pytest.approx(share, abs=1e-6)


def test_metabalance_trains_through_the_trainer_and_its_averages_checkpoint(write_config):
    path = write_config({"loss_weighting": {"type": "metabalance", "target": "cvr", "relax_factor": 0.5}})
    experiment = Experiment(load_config(path))
    experiment.train(day=DAYS[0])
    weighting = experiment.trainer.weighting
    assert type(weighting).__name__ == "MetaBalance"
    averages = np.asarray(weighting.norms)
    assert averages.shape == (2, len(experiment.trainer.shared_variables))
    assert np.all(np.isfinite(averages)) and np.all(averages[0] > 0)
    checkpoint, _ = experiment.checkpoints.latest()
    from mtlrec.training.run.checkpoints import PREFIX

    reader = tf.train.load_checkpoint(str(checkpoint / PREFIX))
    (key,) = [k for k in reader.get_variable_to_shape_map() if k.startswith("weighting/")]
    np.testing.assert_array_equal(reader.get_tensor(key), averages)
