"""Shared fixtures of the experiment-runner tests: tiny synthetic days and tiny configs."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

START = "2024-01-01"
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
ROWS = 320
KNOBS = dict(num_users=60, num_items=50, num_brands=10, num_categories=8, num_shops=8, max_len=4)
REPO = Path(__file__).resolve().parents[2]

SCHEMA = {
    "key": "impression_id",
    "categorical": [
        {"name": "user_id", "dtype": "int64", "num_buckets": 128, "dim": 4},
        {"name": "item_id", "dtype": "int64", "num_buckets": 128, "dim": 4},
        {"name": "scene", "dtype": "string", "num_buckets": 8, "dim": 4},
    ],
    "numeric": [
        {"name": "price", "normalize": "log1p", "default": 0.0},
        {"name": "item_hist_ctr", "normalize": "standardize", "default": 0.08},
    ],
    "sequence": [
        {"name": "hist_item_id", "dtype": "int64", "max_len": 4, "shared_with": "item_id"},
    ],
    "labels": [
        {"name": "click", "kind": "binary"},
        {"name": "conversion", "kind": "binary"},
    ],
}

BASE = {
    "name": "tiny_esmm",
    "data": {"root": "data", "format": "parquet", "funnel": [["click", "conversion"]]},
    "schema": SCHEMA,
    "tasks": [
        {"name": "ctr", "label": "click"},
        {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
    ],
    "model": {"type": "esmm", "tower_units": [8], "seed": 1},
    "optimizer": {
        "dense": {"name": "adam", "learning_rate": 0.01},
        "embedding": {"name": "lazy_adam", "learning_rate": 0.01},
    },
    "loss_weighting": {"type": "fixed"},
    "training": {
        "batch_size": 64,
        "epochs_per_day": 1,
        "checkpoint_every": 2,
        "seed": 5,
        "shuffle_buffer": 128,
        "log_every": 2,
    },
    "evaluation": {"batch_size": 256, "extras": ["user_id", "true_ctr", "true_cvr"]},
    "export": {"keep": 2},
}


@pytest.fixture(scope="session")
def tiny():
    """Facts of the tiny data: its days, rows per day, batches per day (batch size 64)."""
    import math
    import types

    return types.SimpleNamespace(days=list(DAYS), rows=ROWS, steps_per_day=math.ceil(ROWS / 64))


def merge(base: dict, overrides: dict) -> dict:
    """Deep-merge ``overrides`` into a copy of ``base`` (a None value deletes the key)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="session")
def funnel_root(tmp_path_factory):
    """Four tiny days of the synthetic funnel (Parquet), shared by the tests (read only)."""
    from mtlrec.data_pipeline import generate_funnel

    root = tmp_path_factory.mktemp("funnel") / "data"
    generate_funnel(root, START, len(DAYS), ROWS, seed=3, **KNOBS)
    return root


def config_file(directory, root, overrides=None, name="exp.yaml"):
    """A YAML config in ``directory`` reading the days under ``root``, run_dir ``run``."""
    config = merge(BASE, {"data": {"root": str(root)}, "run_dir": "run"})
    config = merge(config, overrides or {})
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def write_config(tmp_path, funnel_root):
    """``write_config(overrides=None, name="exp.yaml") -> Path`` (see ``config_file``)."""

    def write(overrides=None, name="exp.yaml"):
        return config_file(tmp_path, funnel_root, overrides, name)

    return write


@pytest.fixture(scope="session")
def make_config():
    """``config_file`` itself, for tests that bring their own data."""
    return config_file


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, funnel_root):
    """A run trained in one command over the first two days (read only for the tests).

    Returns ``(config path, run_dir)``.
    """
    from mtlrec.training.config import load_config
    from mtlrec.training.experiment import Experiment

    directory = tmp_path_factory.mktemp("trained")
    path = config_file(directory, funnel_root)
    Experiment(load_config(path)).train(days=f"{DAYS[0]}:{DAYS[1]}")
    return path, directory / "run"


def mid_day_checkpoint(run_dir, day=None):
    """meta of a checkpoint taken in the middle of a day (of ``day`` when given), if one exists."""
    import json

    for meta_path in sorted((Path(run_dir) / "checkpoints").glob("ckpt-*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if not meta["completed"] and meta["steps"] > 0 and day in (None, meta["day"]):
            return meta
    return None


def kill_at_mid_day_checkpoint(command, run_dir, env, day=None, timeout=120, log=None):
    """Start ``command`` and SIGKILL it once a mid-day checkpoint (of ``day``) exists in
    ``run_dir``. Returns ``(that checkpoint's meta or None, the process's return code)``;
    its output goes to the file ``log`` when given (to say why it ended before the kill)."""
    import signal
    import time

    out = open(log, "w") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if log else out, env=env)
    finally:
        if log:
            out.close()
    meta, deadline = None, time.monotonic() + timeout
    while meta is None and proc.poll() is None and time.monotonic() < deadline:
        meta = mid_day_checkpoint(run_dir, day) if (Path(run_dir) / "checkpoints").exists() else None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return meta, proc.returncode


@pytest.fixture(scope="session")
def kill_mid_day():
    """``kill_at_mid_day_checkpoint`` itself (SIGKILL a command at a mid-day checkpoint)."""
    return kill_at_mid_day_checkpoint


def subprocess_env(**extra):
    """Environment of a fresh ``python`` that imports this checkout of mtlrec."""
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)})
    env.update(extra)
    return env


def run_cli(*args, timeout=240, env=None):
    """``python -m mtlrec.cli ARGS`` in a fresh process: (returncode, stdout, stderr)."""
    full_env = subprocess_env(**(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(REPO),
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def cli():
    """``cli(*args) -> (returncode, stdout, stderr)`` of ``python -m mtlrec.cli`` in a new process;
    ``cli.env()`` is the environment it uses (for ``subprocess.Popen``)."""
    run_cli.env = subprocess_env
    return run_cli


@pytest.fixture
def cli_in_process(capsys):
    """``cli_in_process(*args) -> (returncode, stdout, stderr)`` of ``mtlrec ARGS`` run by
    ``mtlrec.cli.main`` in this process: for the commands whose exit code and messages a test
    checks, not a fresh process (that saves an interpreter's and TensorFlow's start-up;
    tests/test_cli.py checks a fresh process's exit code and traceback-free error)."""
    from mtlrec.cli import main

    def run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


HOUR_DAY = "2024-01-01"  # the day of the hourly partitions of ``hour_sources``


@pytest.fixture(scope="session")
def hour_sources(tmp_path_factory):
    """Six tiny funnel days (320 rows each) to copy into hourly partitions (``write_hour``)."""
    from mtlrec.data_pipeline import generate_funnel

    root = tmp_path_factory.mktemp("hour_sources") / "data"
    return [root / f"dt={d}" for d in generate_funnel(root, START, 6, ROWS, seed=7, **KNOBS)]


def write_hour(root, hour, source, marker="_SUCCESS", day=HOUR_DAY):
    """Copy the files of ``source`` into ``root/dt=DAY/hour=HH/`` (through a temporary
    name, as a writer would), then its done ``marker`` (None: none). Returns the directory."""
    import shutil

    out = Path(root) / f"dt={day}" / f"hour={hour:02d}"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(source).iterdir()):
        shutil.copyfile(path, out / f".{path.name}.tmp")
        os.replace(out / f".{path.name}.tmp", out / path.name)
    if marker is not None:
        (out / marker).write_text("")
    return out


FOLLOW = {
    "data": {"partitioning": "hour"},
    "follow": {"poll_seconds": 0.05, "missing_wait_seconds": 0.5},
    "export": {"keep": 5},
}
