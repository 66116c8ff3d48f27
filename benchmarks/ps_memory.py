"""Peak memory per task and step time of `training.strategy: parameter_server` against table size.

For each table size (default 1M, 4M and 16M rows in total: `user_id` and `item_id`
with half of them each, dim 16, `lazy_adam`, i.e. 192 bytes per row with its two
slots) the same config trains the same synthetic funnel day twice in one run:

1. a real cluster of processes on 127.0.0.1, every task running `mtlrec train`
   (1 chief, 2 workers, 2 ps, `TF_NUM_INTEROP_THREADS=4`, as
   tests/reliability/test_parameter_server.py does);
2. the same config with `training.strategy: default`, one process.

This process samples every task's `/proc/<pid>/status` (VmHWM: the kernel's peak
RSS of the process, and VmRSS) every `--sample-ms`, and reads the ps tasks' RSS
once they serve and before the chief starts (an idle ps: the TensorFlow runtime
baseline without tables). The step time is the run's own: the mean of the
examples/s of the progress lines (`log_every` steps each) after the first (which
holds the trace), as batch / rate.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/ps_memory.py
"""

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_memory import rss_mb  # noqa: E402

from mtlrec.training.distribute.parameter_server import local_cluster, tf_config  # noqa: E402

DAY = "2024-01-01"
RATE = re.compile(r"step \d+ \(global \d+\) loss \S+ \(.*\) (\d+) examples/s")


def experiment_config(root, run_dir, table_rows, batch_size, steps, strategy, dim=16, eval_batch=4096):
    """ESMM on `user_id` + `item_id` of `table_rows // 2` buckets each (dim ``dim``), lazy Adam."""
    half = max(table_rows // 2, 1)
    return {
        "name": "ps_memory",
        "run_dir": str(run_dir),
        "data": {"root": str(root), "format": "parquet", "funnel": [["click", "conversion"]]},
        "schema": {
            "key": "impression_id",
            "categorical": [
                {"name": "user_id", "dtype": "int64", "num_buckets": half, "dim": dim},
                {"name": "item_id", "dtype": "int64", "num_buckets": half, "dim": dim},
                {"name": "scene", "dtype": "string", "num_buckets": 8, "dim": dim},
            ],
            "numeric": [
                {"name": "price", "normalize": "log1p", "default": 0.0},
                {"name": "item_hist_ctr", "normalize": "standardize", "default": 0.08},
            ],
            "sequence": [{"name": "hist_item_id", "dtype": "int64", "max_len": 20, "shared_with": "item_id"}],
            "labels": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
        },
        "tasks": [
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
        ],
        "model": {"type": "esmm", "tower_units": [64], "seed": 1},
        "optimizer": {
            "dense": {"name": "adam", "learning_rate": 0.001},
            "embedding": {"name": "lazy_adam", "learning_rate": 0.01},
        },
        "training": {
            "strategy": strategy, "batch_size": batch_size, "epochs_per_day": 1, "steps_per_day": steps,
            "checkpoint_every": 100_000, "log_every": 10, "seed": 5, "shuffle_buffer": 10_000,
        },
        "evaluation": {"batch_size": eval_batch},
        "export": {"keep": 1},
    }


def write_config(path, config):
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


def env_for(job=None, index=0, cluster=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.getcwd())
    env.pop("TF_CONFIG", None)
    if cluster is not None:
        env.update(TF_CONFIG=tf_config(cluster, job, index), TF_NUM_INTEROP_THREADS="4")
    return env


def train_command(config_path, day):
    return [sys.executable, "-m", "mtlrec.cli", "train", str(config_path), "--day", day]


class Sampler:
    """RSS (MB) of a set of processes, sampled by ``poll``: ``peak`` over the whole run (VmHWM)
    and ``training``, the largest VmRSS while the steps run (after the trainer's first
    progress line, before its first checkpoint: the tables and slots without the
    copies that saving, gathering and exporting make)."""

    def __init__(self, log_path):
        self.log_path = log_path
        self.peak, self.training = {}, {}

    def poll(self, procs):
        with open(self.log_path) as f:
            text = f.read()
        in_steps = RATE.search(text) is not None and "checkpoint ckpt-" not in text
        for name, proc in procs.items():
            for field in ("VmHWM", "VmRSS"):
                mb = rss_mb(proc.pid, field)
                if mb is not None:
                    self.peak[name] = max(self.peak.get(name, 0.0), mb)
                    if in_steps and field == "VmRSS":
                        self.training[name] = max(self.training.get(name, 0.0), mb)


def wait_serving(address, proc, timeout=120):
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"task at {address} did not start serving")


def step_ms(log_text, batch_size):
    """Mean step time (ms) of the progress lines after the first."""
    rates = [float(r) for r in RATE.findall(log_text)][1:]
    if not rates:
        return float("nan")
    return 1000.0 * batch_size / statistics.mean(rates)


def run_single(config_path, work, sample_ms, day=DAY):
    """One process; (its ``Sampler``, its log)."""
    log_path = os.path.join(work, "single.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(train_command(config_path, day), env=env_for(), stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(log_path)
        while proc.poll() is None:
            sampler.poll({"single": proc})
            time.sleep(sample_ms / 1000)
    text = open(log_path).read()
    if proc.returncode != 0:
        raise SystemExit(f"single process failed (exit {proc.returncode}): {text[-3000:]}")
    return sampler, text


def run_cluster(config_path, work, sample_ms, workers=2, ps=2, day=DAY):
    """1 chief + ``workers`` + ``ps`` processes; (their ``Sampler``, {ps task: idle MB}, chief's log)."""
    cluster = local_cluster(workers=workers, ps=ps)
    servers = {}
    try:
        for job in ("ps", "worker"):
            for i in range(len(cluster[job])):
                log = open(os.path.join(work, f"{job}{i}.log"), "w")
                servers[f"{job} {i}"] = subprocess.Popen(
                    train_command(config_path, day), env=env_for(job, i, cluster), stdout=log,
                    stderr=subprocess.STDOUT)
        for name, proc in servers.items():
            job, i = name.split()
            wait_serving(cluster[job][int(i)], proc)
        time.sleep(1.0)
        idle = {name: rss_mb(proc.pid) for name, proc in servers.items() if name.startswith("ps")}
        chief_log = os.path.join(work, "chief.log")
        with open(chief_log, "w") as log:
            chief = subprocess.Popen(train_command(config_path, day), env=env_for("chief", 0, cluster),
                                     stdout=log, stderr=subprocess.STDOUT)
            procs = {"chief": chief, **servers}
            sampler = Sampler(chief_log)
            while chief.poll() is None:
                sampler.poll(procs)
                time.sleep(sample_ms / 1000)
            sampler.poll(servers)  # their VmHWM: the exact peak, read before they are stopped
        text = open(chief_log).read()
        if chief.returncode != 0:
            raise SystemExit(f"chief failed (exit {chief.returncode}): {text[-3000:]}")
        return sampler, idle, text
    finally:
        for proc in servers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table-rows", default="1000000,4000000,16000000",
                   help="comma-separated total embedding rows (user_id + item_id, half each)")
    p.add_argument("--steps", type=int, default=60, help="steps of the day")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--sample-ms", type=float, default=50.0)
    p.add_argument("--work", default=None, help="directory for the data and runs (default: a temp dir)")
    args = p.parse_args()

    from mtlrec.data_pipeline import generate_funnel

    sizes = [int(r) for r in args.table_rows.split(",") if r]
    work = args.work or tempfile.mkdtemp(prefix="mtlrec_ps_memory_")
    root = os.path.join(work, "data")
    generate_funnel(root, DAY, 1, args.steps * args.batch_size, seed=0)
    results = []
    load_before = os.getloadavg()
    try:
        for rows in sizes:
            runs = {}
            for strategy in ("default", "parameter_server"):
                run_work = os.path.join(work, f"{rows}_{strategy}")
                os.makedirs(run_work, exist_ok=True)
                config = write_config(os.path.join(run_work, "exp.yaml"), experiment_config(
                    root, os.path.join(run_work, "run"), rows, args.batch_size, args.steps, strategy))
                began = time.perf_counter()
                if strategy == "default":
                    sampler, text = run_single(config, run_work, args.sample_ms)
                    runs[strategy] = (sampler, {}, text)
                else:
                    runs[strategy] = run_cluster(config, run_work, args.sample_ms)
                sampler = runs[strategy][0]
                print(f"  {rows:,} rows, {strategy}: {time.perf_counter() - began:.0f} s; MB peak (during steps): "
                      + ", ".join(f"{k} {v:,.0f} ({sampler.training.get(k, float('nan')):,.0f})"
                                  for k, v in sampler.peak.items()), flush=True)
                shutil.rmtree(os.path.join(run_work, "run"), ignore_errors=True)
            results.append((rows, runs))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    import tensorflow as tf

    print()
    print(f"machine: {os.cpu_count()} CPUs (shared), load average {load_before[0]:.2f} before / "
          f"{load_after[0]:.2f} after | Python {platform.python_version()}, TensorFlow {tf.__version__}")
    print(f"ESMM, user_id + item_id tables of dim 16 (half the rows each), lazy_adam; one day of "
          f"{args.steps} steps x batch {args.batch_size}; cluster: 1 chief, 2 workers, 2 ps on 127.0.0.1; "
          f"RSS sampled every {args.sample_ms:g} ms")
    print()
    print("Peak RSS over the whole run (MB):")
    print()
    print("| table rows | table + slots MB | idle ps | ps 0 | ps 1 | chief | worker 0 | worker 1 | single "
          "| ps 0 / single | ps 1 / single |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows, runs in results:
        peak, one = runs["parameter_server"][0].peak, runs["default"][0].peak["single"]
        idle = statistics.mean(v for v in runs["parameter_server"][1].values() if v is not None)
        print(f"| {rows:,} | {rows * 16 * 4 * 3 / 2**20:,.0f} | {idle:,.0f} | "
              + " | ".join(f"{peak[k]:,.0f}" for k in ("ps 0", "ps 1", "chief", "worker 0", "worker 1"))
              + f" | {one:,.0f} | {peak['ps 0'] / one:.2f} | {peak['ps 1'] / one:.2f} |")
    print()
    print("RSS while the steps run (MB, before the first checkpoint) and step time (ms, mean after the "
          "first progress line):")
    print()
    print("| table rows | ps 0 | ps 1 | chief | single | ps 0 - idle ps | table + slots / 2 "
          "| step ms cluster | step ms single | cluster / single |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows, runs in results:
        train, one = runs["parameter_server"][0].training, runs["default"][0].training.get("single", float("nan"))
        idle = statistics.mean(v for v in runs["parameter_server"][1].values() if v is not None)
        cluster_ms = step_ms(runs["parameter_server"][2], args.batch_size)
        single_ms = step_ms(runs["default"][2], args.batch_size)
        print(f"| {rows:,} | " + " | ".join(f"{train.get(k, float('nan')):,.0f}" for k in ("ps 0", "ps 1", "chief"))
              + f" | {one:,.0f} | {train.get('ps 0', float('nan')) - idle:,.0f} | {rows * 16 * 4 * 3 / 2**21:,.0f} "
              f"| {cluster_ms:.1f} | {single_ms:.1f} | {cluster_ms / single_ms:.2f} |")

if __name__ == "__main__":
    main()
