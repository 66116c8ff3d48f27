"""Hourly partitions and `mtlrec train --follow`: keys, the directory source, the export
cadence, config checks, and follow runs against hours written while they run."""

import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import pytest

from mtlrec.cli import main
from mtlrec.data_pipeline import DataValidationError
from mtlrec.data_pipeline.partition_keys import hour_number, label, next_hour, parse_partition
from mtlrec.data_pipeline.partitions import day_dir, day_files, list_hours
from mtlrec.training.config import ConfigError, load_config
from mtlrec.training.experiment import Experiment
from mtlrec.training.follow.directory_source import DirectorySource
from mtlrec.training.follow.export_cadence import ExportCadence
from mtlrec.training.follow.stop_request import StopRequest
from mtlrec.training.report import make_report
from mtlrec.training.run.metrics_log import read_metrics
from mtlrec.training.run.run_state import RunState
from mtlrec.training.serving.export import read_metadata, versions

_spec = importlib.util.spec_from_file_location("mtlrec_training_conftest", Path(__file__).with_name("conftest.py"))
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
FOLLOW, HOUR_DAY, config_file, merge, write_hour = (
    _conftest.FOLLOW, _conftest.HOUR_DAY, _conftest.config_file, _conftest.merge, _conftest.write_hour,
)

H = [f"{HOUR_DAY}T{h:02d}" for h in range(24)]


# ---------------------------------------------------------------- keys, layout, source


def test_partition_keys_parse_name_and_step_through_hours():
    assert parse_partition("dt=2024-01-01/hour=03") == "2024-01-01T03"
    assert parse_partition("dt=2024-01-01/hour=3/") == "2024-01-01T03"
    assert parse_partition("2024-01-01T03") == "2024-01-01T03"
    assert parse_partition("dt=2024-01-01") == "2024-01-01"
    for bad in ("dt=2024-01-01/hour=24", "2024-13-01T00", "hour=03", 3):
        with pytest.raises(ValueError, match="dt=YYYY-MM-DD"):
            parse_partition(bad)
    assert label("2024-01-01T03") == "dt=2024-01-01/hour=03" and label("2024-01-01") == "2024-01-01"
    assert next_hour("2024-01-01T22") == "2024-01-01T23"
    assert next_hour("2023-12-31T23") == "2024-01-01T00"
    assert next_hour("2024-02-28") == "2024-02-29T00"  # after a day: the next day's first hour
    assert hour_number("2024-01-02T00") - hour_number("2024-01-01T23") == 1
    assert sorted(["2024-01-01T10", "2024-01-02", "2024-01-01", "2024-01-01T02"]) == [
        "2024-01-01", "2024-01-01T02", "2024-01-01T10", "2024-01-02",
    ]


def test_hour_directories_are_read_like_days(tmp_path, hour_sources):
    root = tmp_path / "data"
    write_hour(root, 1, hour_sources[0])
    write_hour(root, 0, hour_sources[1])
    (root / f"dt={HOUR_DAY}" / "hour=xx").mkdir()  # not an hour: ignored
    assert str(day_dir(root, H[1])) == str(root / "dt=2024-01-01" / "hour=01")
    assert list_hours(root, HOUR_DAY) == [H[0], H[1]]
    files = day_files(root, H[1], "parquet")
    assert [os.path.basename(f) for f in files] == sorted(p.name for p in hour_sources[0].glob("*.parquet"))
    with pytest.raises(DataValidationError, match=r"partition dt=2024-01-01/hour=02 missing"):
        day_files(root, H[2], "parquet")


def test_directory_source_lists_hours_with_their_marker_and_fingerprints_their_files(tmp_path, hour_sources):
    root = tmp_path / "data"
    write_hour(root, 0, hour_sources[0])
    write_hour(root, 1, hour_sources[1], marker=None)  # still being written
    out = write_hour(root, 2, hour_sources[2], marker="_DONE")
    source = DirectorySource(root, "parquet", "_SUCCESS")
    assert [p.key for p in source.complete(H[0])] == [H[0]]
    assert source.get(H[1]) is None and source.complete(H[1]) == []
    assert [p.key for p in DirectorySource(root, "parquet", "_DONE").complete(H[0])] == [H[2]]
    assert [p.key for p in DirectorySource(root, "parquet", None).complete(H[1])] == [H[1], H[2]]
    first = source.get(H[0])
    assert first.ready_at == pytest.approx(os.stat(Path(day_dir(root, H[0])) / "_SUCCESS").st_mtime)
    assert source.get(H[0]).fingerprint == first.fingerprint  # nothing changed
    data = next(Path(day_dir(root, H[0])).glob("*.parquet"))
    stat = os.stat(data)
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten: a new mtime
    assert source.get(H[0]).fingerprint != first.fingerprint
    assert out.exists()


def test_export_cadence_counts_partitions_or_minutes():
    every3 = ExportCadence(3)
    assert [every3.due(n, None, 0.0) for n in (0, 1, 2, 3)] == [False, False, False, True]
    every30 = ExportCadence("30min")
    assert every30.due(1, None, 100.0)  # no export yet
    assert not every30.due(4, 1000.0, 1000.0 + 29 * 60)
    assert every30.due(1, 1000.0, 1000.0 + 30 * 60)


@pytest.mark.parametrize(
    "overrides, key, expected",
    [
        ({"data": {"partitioning": "minute"}}, "data.partitioning", "one of day, hour"),
        ({"export": {"every": 0}}, "export.every", "a number of partitions"),
        ({"export": {"every": "soon"}}, "export.every", "a number of partitions"),
        ({"follow": {"poll_seconds": -1}}, "follow.poll_seconds", "a positive number"),
        ({"follow": {"missing_wait_seconds": "1h"}}, "follow.missing_wait_seconds", "a non-negative number"),
        ({"follow": {"start": "2024-01-01 03:00"}}, "follow.start", "dt=YYYY-MM-DD/hour=HH"),
        ({"data": {"done_marker": ""}}, "data.done_marker", "a non-empty string"),
    ],
)
def test_bad_follow_settings_name_their_key(overrides, key, expected, write_config, capsys):
    path = write_config(overrides)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    line = str(err.value)
    assert key in line and expected in line and "\n" not in line
    assert main(["train", str(path), "--follow"]) == 2
    assert key in capsys.readouterr().err


def test_follow_settings_load_with_their_defaults(write_config):
    config = load_config(write_config({"export": {"every": "15min"}, "follow": {"start": "dt=2024-01-01/hour=04"}}))
    assert config.data.partitioning == "day" and config.data.done_marker == "_SUCCESS"
    assert config.export.every == "15min" and config.follow.start == "2024-01-01T04"
    assert (config.follow.poll_seconds, config.follow.missing_wait_seconds) == (30.0, 3600.0)
    assert config.to_dict()["follow"]["start"] == "2024-01-01T04"


def test_follow_needs_hourly_partitions_and_hours_need_follow(write_config, capsys):
    assert main(["train", str(write_config()), "--follow"]) == 2
    err = capsys.readouterr().err
    assert "data.partitioning" in err and "--follow reads hourly partitions" in err
    assert main(["train", str(write_config({"data": {"partitioning": "hour"}})), "--days", "2024-01-01:2024-01-02"]) == 2
    assert "data.partitioning" in capsys.readouterr().err
    assert main(["train", str(write_config()), "--until", "dt=2024-01-01/hour=01"]) == 2
    assert "--until goes with --follow" in capsys.readouterr().err


# ---------------------------------------------------------------- follow runs


def _config(tmp_path, root, overrides=None):
    return config_file(tmp_path, root, merge(FOLLOW, overrides or {}))


def _progressive_rows(run_dir, metric="progressive_auc"):
    return [(r["day"], r["task"]) for r in read_metrics(run_dir) if r["metric"] == metric]


@pytest.mark.slow
def test_follow_trains_hours_written_while_it_runs_once_each_with_exports_on_cadence(tmp_path, hour_sources, capsys):
    root = tmp_path / "data"
    write_hour(root, 0, hour_sources[0])
    config = _config(tmp_path, root, {"export": {"every": 3}})

    def writer():  # the other hours land one by one while the follow runs
        for hour in range(1, 6):
            time.sleep(0.5)
            write_hour(root, hour, hour_sources[hour])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        code = main(["train", str(config), "--follow", "--until", "dt=2024-01-01/hour=05"])
    finally:
        thread.join()
    out = capsys.readouterr().out
    assert code == 0
    run_dir = tmp_path / "run"
    state = RunState.load(run_dir)
    assert state.trained_days == H[:6]
    assert [(e["times_trained"], e["steps"], e["examples"], e["rows"]) for e in state.days] == [(1, 5, 320, 320)] * 6
    assert state.global_step == 30 and state.pending is None
    assert state.data["follow"]["skipped"] == [] and state.data["follow"]["progressive"] == {}
    # one progressive AUC row per task and partition, in metrics.csv and state.json
    assert sorted(_progressive_rows(run_dir)) == [(h, t) for h in H[:6] for t in ("ctcvr", "ctr", "cvr")]
    assert all(0.0 <= e["progressive"]["ctr"]["auc"] <= 1.0 for e in state.days)
    assert [(r["day"], r["value"]) for r in read_metrics(run_dir) if r["metric"] == "rows"] == [(h, 320.0) for h in H[:6]]
    # exports after every third partition; each partition's lag runs to the export holding it
    assert versions(run_dir / "export") == [1, 2]
    assert [read_metadata(run_dir / "export" / str(v))["day"] for v in (1, 2)] == [H[2], H[5]]
    assert [e["export_version"] for e in state.days] == [1, 1, 1, 2, 2, 2]
    lags = {r["day"]: r["value"] for r in read_metrics(run_dir) if r["metric"] == "lag_seconds"}
    assert sorted(lags) == H[:6] and all(lag > 0 for lag in lags.values())
    assert lags[H[0]] > lags[H[2]]  # the first hour waited for the two after it
    assert all(e["lag_seconds"] == pytest.approx(lags[e["day"]]) for e in state.days)
    assert "trained 2024-01-01T05: 320 rows, 5 steps (global step 30), progressive AUC ctr" in out
    assert run_dir / "plots" / "progressive_by_hour.png" in make_report(run_dir)

    # the same command again: nothing to do, nothing written
    text = (run_dir / "state.json").read_text()
    assert main(["train", str(config), "--follow", "--until", "dt=2024-01-01/hour=05"]) == 0
    assert (run_dir / "state.json").read_text() == text and versions(run_dir / "export") == [1, 2]


@pytest.mark.slow
def test_missing_hour_is_skipped_after_the_wait_and_reported_late_when_it_lands(tmp_path, hour_sources, caplog):
    root = tmp_path / "data"
    write_hour(root, 0, hour_sources[0])
    write_hour(root, 2, hour_sources[2])  # hour 1 missing
    experiment = Experiment(load_config(_config(tmp_path, root)))
    entries = experiment.follow(until="dt=2024-01-01/hour=02")
    assert [e["day"] for e in entries] == [H[0], H[2]]
    state = RunState.load(tmp_path / "run")
    skipped = state.data["follow"]["skipped"]
    assert [s["partition"] for s in skipped] == [H[1]]
    assert "missing after waiting" in skipped[0]["reason"] and "dt=2024-01-01/hour=02 was complete" in skipped[0]["reason"]
    assert "skipping partition dt=2024-01-01/hour=01" in caplog.text

    # hour 1 lands after hour 2 was trained: reported, never trained
    write_hour(root, 1, hour_sources[1])
    write_hour(root, 3, hour_sources[3])
    caplog.clear()
    entries = Experiment(load_config(_config(tmp_path, root))).follow(until="dt=2024-01-01/hour=03")
    assert [e["day"] for e in entries] == [H[3]]
    state = RunState.load(tmp_path / "run")
    assert state.trained_days == [H[0], H[2], H[3]]
    assert [s["partition"] for s in state.data["follow"]["late"]] == [H[1]]
    assert "partition dt=2024-01-01/hour=01 landed after later partitions were trained" in caplog.text


@pytest.mark.slow
def test_rewritten_partition_is_refused_and_a_bad_one_stops_with_the_run_as_it_was(tmp_path, hour_sources, capsys):
    root = tmp_path / "data"
    write_hour(root, 0, hour_sources[0])
    config = _config(tmp_path, root)
    assert main(["train", str(config), "--follow", "--until", "dt=2024-01-01/hour=00"]) == 0
    write_hour(root, 0, hour_sources[3])  # hour 0 rewritten with other rows
    write_hour(root, 1, hour_sources[1])
    capsys.readouterr()
    assert main(["train", str(config), "--follow", "--until", "dt=2024-01-01/hour=01"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "was rewritten" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "partition dt=2024-01-01/hour=00 was rewritten after it was trained (its files changed); "
        "refused: it is not trained again"
    )
    assert "refused: 2024-01-01T00" in captured.out
    state = RunState.load(tmp_path / "run")
    assert state.trained_days == [H[0], H[1]] and state.entry(H[0])["times_trained"] == 1
    assert [r["partition"] for r in state.data["follow"]["refused"]] == [H[0]]

    # a truncated file in hour 2: one line naming it, the run directory untouched
    out = write_hour(root, 2, hour_sources[2])
    data = next(out.glob("*.parquet"))
    data.write_bytes(data.read_bytes()[:200])
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    assert main(["train", str(config), "--follow", "--until", "dt=2024-01-01/hour=02"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("mtlrec: error:") and data.name in errors[0]
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


@pytest.mark.slow
def test_stop_request_ends_mid_partition_with_a_checkpoint_and_the_rerun_finishes_it(tmp_path, hour_sources):
    root = tmp_path / "data"
    for hour in range(2):
        write_hour(root, hour, hour_sources[hour])
    config = load_config(_config(tmp_path, root))
    stop = StopRequest()
    experiment = Experiment(config)
    real = experiment._checkpoint

    def checkpoint(run, position, state):  # ask for a stop at the first mid-partition checkpoint of hour 1
        real(run, position, state)
        if position.day == H[1] and not position.completed:
            stop.request("test")

    experiment._checkpoint = checkpoint
    assert [e["day"] for e in experiment.follow(stop=stop)] == [H[0]]
    meta = json.loads(sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*/meta.json"))[-1].read_text())
    assert (meta["day"], meta["steps"], meta["completed"]) == (H[1], 2, False)
    state = RunState.load(tmp_path / "run")
    assert state.trained_days == [H[0]] and H[1] in state.data["follow"]["progressive"]

    entries = Experiment(load_config(_config(tmp_path, root))).follow(until=H[1])
    assert [(e["day"], e["steps"], e["examples"], e["times_trained"]) for e in entries] == [(H[1], 5, 320, 1)]
    assert RunState.load(tmp_path / "run").global_step == 10


@pytest.mark.slow
def test_a_daily_run_continues_hourly_from_its_checkpoint_and_back(tmp_path, trained_run, funnel_root, hour_sources):
    import shutil

    daily_config, daily_run = trained_run  # 2024-01-01 and 2024-01-02 trained by day
    run_dir = tmp_path / "run"
    shutil.copytree(daily_run, run_dir)
    root = tmp_path / "hours"
    for hour in range(2):
        write_hour(root, hour, hour_sources[hour], day="2024-01-03")
    hourly = load_config(config_file(tmp_path, root, FOLLOW, name="hourly.yaml"))
    entries = Experiment(hourly).follow(until="dt=2024-01-03/hour=01")
    assert [(e["day"], e["global_step"]) for e in entries] == [("2024-01-03T00", 15), ("2024-01-03T01", 20)]
    daily = load_config(config_file(tmp_path, funnel_root, name="daily.yaml"))
    assert [e["day"] for e in Experiment(daily).train(day="2024-01-04")] == ["2024-01-04"]
    state = RunState.load(run_dir)
    assert state.trained_days == ["2024-01-01", "2024-01-02", "2024-01-03T00", "2024-01-03T01", "2024-01-04"]
    assert [e["global_step"] for e in state.days] == [5, 10, 15, 20, 25] and state.pending is None


@pytest.mark.slow
def test_dynamic_tables_evict_and_count_at_every_hour(tmp_path, hour_sources):
    import copy

    schema = copy.deepcopy(_conftest.SCHEMA)
    schema["categorical"][1].update(lookup="dynamic", num_buckets=16, min_count=1, oov_buckets=1, ttl_days=1)
    root = tmp_path / "data"
    for hour in range(3):
        write_hour(root, hour, hour_sources[hour])
    config = load_config(_config(tmp_path, root, {"schema": schema, "export": {"every": 3}}))
    Experiment(config).follow(until=H[2])
    figures = {(r["day"], r["metric"]): r["value"] for r in read_metrics(tmp_path / "run") if r["task"] == "table:item_id"}
    assert sorted({day for day, _ in figures}) == H[:3]  # each hour has its own figures
    assert [figures[(h, "capacity")] for h in H[:3]] == [16.0] * 3
    assert all(figures[(h, "rows_in_use")] == 16.0 for h in H[:3])  # 40-odd items a hour fill it
    # hours 1 and 2 open with ids waiting from the hour before: some admitted rows give way
    assert figures[(H[1], "evicted")] > 0 and figures[(H[2], "evicted")] > 0


def test_tfrecord_hours_are_listed_and_read(tmp_path, hour_sources):
    from mtlrec.data_pipeline import convert_day, validate_day

    parquet, tfrecord = tmp_path / "parquet", tmp_path / "tfrecord"
    write_hour(parquet, 4, hour_sources[0])
    convert_day(parquet, tfrecord, H[4], _conftest.SCHEMA, "tfrecord")
    (tfrecord / f"dt={HOUR_DAY}" / "hour=04" / "_SUCCESS").write_text("")
    assert [os.path.basename(f) for f in day_files(tfrecord, H[4], "tfrecord")][0].endswith(".tfrecord")
    assert [p.key for p in DirectorySource(tfrecord, "tfrecord").complete(H[0])] == [H[4]]
    assert DirectorySource(tfrecord, "parquet").get(H[4]).fingerprint != DirectorySource(tfrecord, "tfrecord").get(H[4]).fingerprint
    assert validate_day(tfrecord, H[4], _conftest.SCHEMA, fmt="tfrecord") == 320


def test_sigterm_inside_a_follow_sets_the_stop_request_and_the_handler_goes_back_after():
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    with stop.installed():
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5.0) and bool(stop)  # the process lives on; the loop sees the flag
    assert signal.getsignal(signal.SIGTERM) is previous
