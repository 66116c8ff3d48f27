"""Next-day AUC of `training.strategy: parameter_server` against one process on the same day.

Each run writes two synthetic funnel days (`generate_funnel`, `--rows` each, a new
data seed per run), then trains the first day and evaluates on the second twice,
with the same config (ESMM, `user_id` + `item_id` tables, lazy Adam; the config of
benchmarks/ps_memory.py): on a cluster of processes on 127.0.0.1 (1 chief, 2
workers, 2 ps; asynchronous steps) and in one process (`training.strategy:
default`). Prints each task's AUC (ctr, cvr on clicks, ctcvr) of both and their
difference, then the mean and max |difference| over the runs.

`--lookup dynamic` gives `user_id` and `item_id` dynamic id maps (capacity: their
buckets) instead of hashing, in both runs, and also says whether the day's figures of
each map (rows in use, admitted, ids tracked, ...) are the same on the cluster and in
one process.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/ps_quality.py [--lookup dynamic]
"""

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ps_memory import DAY, experiment_config, run_cluster, run_single, write_config  # noqa: E402

TASKS = ("ctr", "cvr", "ctcvr")


def aucs(run_dir):
    """{task: the AUC of the last evaluation} from the run's metrics.csv."""
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return {r["task"]: float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "auc"}


def table_figures(run_dir):
    """{(table, figure): value} of the identity/dynamic tables' day figures in metrics.csv."""
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return {(r["task"], r["metric"]): r["value"] for r in csv.DictReader(f) if r["task"].startswith("table:")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--first-run", type=int, default=0, help="number (and data seed) of the first run")
    p.add_argument("--rows", type=int, default=30_000, help="rows per day")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--table-rows", type=int, default=40_000, help="user_id + item_id buckets (half each)")
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--lookup", choices=("hash", "dynamic"), default="hash", help="of user_id and item_id")
    args = p.parse_args()

    from mtlrec.data_pipeline import generate_funnel

    work = tempfile.mkdtemp(prefix="mtlrec_ps_quality_")
    table = []
    load_before = os.getloadavg()
    try:
        for run in range(args.first_run, args.first_run + args.runs):
            root = os.path.join(work, f"data{run}")
            generate_funnel(root, DAY, 2, args.rows, seed=run)
            result, figures = {}, {}
            for strategy in ("default", "parameter_server"):
                run_work = os.path.join(work, f"{run}_{strategy}")
                os.makedirs(run_work)
                run_dir = os.path.join(run_work, "run")
                config = experiment_config(root, run_dir, args.table_rows, args.batch_size, None, strategy, dim=args.dim)
                for feature in config["schema"]["categorical"][:2]:  # user_id, item_id
                    feature["lookup"] = args.lookup
                config = write_config(os.path.join(run_work, "exp.yaml"), config)
                (run_single if strategy == "default" else run_cluster)(config, run_work, 200.0)
                result[strategy] = aucs(run_dir)
                figures[strategy] = table_figures(run_dir)
                shutil.rmtree(run_work, ignore_errors=True)
            table.append(result)
            same = figures["default"] == figures["parameter_server"]
            maps = f"; id maps' day figures equal: {same} ({len(figures['default'])} figures)" if figures["default"] else ""
            print(f"  run {run}: " + ", ".join(
                f"{t} {result['parameter_server'][t]:.4f} vs {result['default'][t]:.4f}" for t in TASKS) + maps,
                flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    steps = -(-args.rows // args.batch_size)
    print()
    print(f"{args.runs} runs; lookup {args.lookup}; days of {args.rows:,} rows, batch {args.batch_size} ({steps} steps), tables "
          f"{args.table_rows:,} rows x dim {args.dim}; load average {load_before[0]:.2f} before / "
          f"{load_after[0]:.2f} after")
    print()
    print("| run | " + " | ".join(f"{t} AUC cluster | {t} AUC single | diff" for t in TASKS) + " |")
    print("|---:|" + "---:|---:|---:|" * len(TASKS))
    for i, r in enumerate(table, args.first_run):
        print(f"| {i} | " + " | ".join(
            f"{r['parameter_server'][t]:.4f} | {r['default'][t]:.4f} | "
            f"{r['parameter_server'][t] - r['default'][t]:+.4f}" for t in TASKS) + " |")
    print()
    for t in TASKS:
        diffs = [abs(r["parameter_server"][t] - r["default"][t]) for r in table]
        print(f"{t}: |AUC cluster - AUC single| mean {statistics.mean(diffs):.4f}, max {max(diffs):.4f}")


if __name__ == "__main__":
    main()
