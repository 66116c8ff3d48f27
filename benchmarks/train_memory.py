"""Peak memory of `mtlrec train` on days of different sizes: bounded by buffers, not the day.

For each day size (default 1,000,000 and 10,000,000 rows) one synthetic funnel
day (`generate_funnel`, Parquet, the full funnel schema: 10 categorical
features, 2 numerics, 5 behavior sequences of up to 20 steps) is written, then
a fresh child process trains an MMoE on it through the real path,
`Experiment(config).train(day=...)` (the code behind `mtlrec train --day`):
validation of the whole day, the streamed Parquet -> `tf.data` reader with a
shuffle buffer, the Trainer's loop, checkpoints and the final export. This
process samples the child's RSS (`/proc/<pid>/status`) every `--sample-ms`.

Every day trains the same number of steps (`--steps`, default: all batches of
the smallest day), so a peak that grew with the day would come from the day's
size and not from training longer. `--whole-day` trains every day to its end.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/train_memory.py
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

DAY = "2024-01-01"


def rss_mb(pid="self", field="VmRSS"):
    """``field`` of ``/proc/<pid>/status`` in MB (VmRSS: now, VmHWM: the peak so far), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def child(root, run_dir, steps, batch_size, shuffle_buffer):
    """Runs in a fresh process: train one day with Experiment.train, print a JSON summary."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    start_imports = time.perf_counter()
    from mtlrec.data_pipeline import funnel_schema_dict
    from mtlrec.training.config import config_from_dict
    from mtlrec.training.experiment import Experiment

    imported = rss_mb()
    print(json.dumps({"event": "imported", "rss": imported}), flush=True)
    config = config_from_dict({
        "name": "memory",
        "run_dir": run_dir,
        "data": {"root": root, "format": "parquet"},
        "schema": funnel_schema_dict(),
        "tasks": [{"name": "ctr", "label": "click"},
                  {"name": "cvr", "label": "conversion", "sample_space": "click"}],
        "model": {"type": "mmoe", "num_experts": 4, "expert_units": [64], "tower_units": [32],
                  "seed": 1},
        "optimizer": {"dense": {"name": "adam", "learning_rate": 0.001},
                      "embedding": {"name": "lazy_adam", "learning_rate": 0.001}},
        "training": {"batch_size": batch_size, "shuffle_buffer": shuffle_buffer,
                     "steps_per_day": steps, "checkpoint_every": 500, "log_every": 500},
    })
    began = time.perf_counter()
    entries = Experiment(config).train(day=DAY)
    seconds = time.perf_counter() - began
    entry = entries[-1] if entries else {}
    print(json.dumps({"event": "done", "seconds": seconds, "import_seconds": began - start_imports,
                      "entry": entry, "rss": rss_mb()}, default=str), flush=True)


def run_child(args, root, run_dir, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", root, run_dir,
           str(steps or 0), "--batch-size", str(args.batch_size),
           "--shuffle-buffer", str(args.shuffle_buffer)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return sample_child(cmd, env, args.sample_ms)


def sample_child(cmd, env, sample_ms):
    """Run ``cmd``, sample its RSS every ``sample_ms``; (peak MB, samples, its JSON lines by event)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    peak, samples = 0.0, 0
    import threading

    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss = rss_mb(proc.pid)
        if rss is not None:
            peak, samples = max(peak, rss), samples + 1
        time.sleep(sample_ms / 1000)
    reader.join()
    events = {}
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        events[e.get("event")] = e
    if proc.returncode != 0 or "done" not in events:
        raise SystemExit(f"child failed (exit {proc.returncode}): {''.join(lines)[-2000:]}")
    return peak, samples, events


def dir_mb(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1000000,10000000", help="comma-separated day sizes")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per day (default: the batches of the smallest day)")
    p.add_argument("--whole-day", action="store_true", help="train every day to its end")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--shuffle-buffer", type=int, default=100_000)
    p.add_argument("--sample-ms", type=float, default=20.0)
    p.add_argument("--work", default=None, help="directory for the data (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated data")
    p.add_argument("--child", nargs=3, metavar=("ROOT", "RUN_DIR", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        root, run_dir, steps = args.child
        child(root, run_dir, int(steps) or None, args.batch_size, args.shuffle_buffer)
        return

    from mtlrec.data_pipeline import generate_funnel

    sizes = [int(r) for r in args.rows.split(",") if r]
    steps = None if args.whole_day else (args.steps or -(-min(sizes) // args.batch_size))
    work = args.work or tempfile.mkdtemp(prefix="mtlrec_memory_")
    results = []
    load_before = os.getloadavg()
    try:
        for rows in sizes:
            root = os.path.join(work, f"rows{rows}")
            began = time.perf_counter()
            if not os.path.isdir(os.path.join(root, f"dt={DAY}")):
                generate_funnel(root, DAY, 1, rows, seed=0, files_per_day=max(1, rows // 1_000_000))
            gen_s = time.perf_counter() - began
            run_dir = os.path.join(work, f"run{rows}")
            shutil.rmtree(run_dir, ignore_errors=True)
            peak, samples, events = run_child(args, root, run_dir, steps)
            entry = events["done"]["entry"]
            results.append((rows, dir_mb(os.path.join(root, f"dt={DAY}")), gen_s,
                            events["imported"]["rss"], peak, samples, events["done"]["seconds"],
                            entry.get("steps"), entry.get("examples")))
            print(f"  {rows:,} rows: peak {peak:,.0f} MB ({samples} samples), "
                  f"{entry.get('steps')} steps in {events['done']['seconds']:.0f} s", flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before / {load_after[0]:.2f} after | Python {platform.python_version()}")
    print(f"batch {args.batch_size}, shuffle buffer {args.shuffle_buffer:,} rows; "
          f"{'whole days' if steps is None else f'{steps} steps per day'}; "
          f"RSS sampled every {args.sample_ms:g} ms")
    print()
    print("|   day rows | Parquet MB | generate s | steps | examples trained | train s "
          "| RSS after imports MB | peak RSS MB |")
    print("|-----------:|-----------:|-----------:|------:|-----------------:|--------:"
          "|---------------------:|------------:|")
    for rows, mb, gen_s, imported, peak, _n, secs, st, ex in results:
        print(f"| {rows:>10,} | {mb:10.0f} | {gen_s:10.0f} | {st:>5} | {ex:>16,} | {secs:7.0f} "
              f"| {imported:20.0f} | {peak:11.0f} |")


if __name__ == "__main__":
    main()
