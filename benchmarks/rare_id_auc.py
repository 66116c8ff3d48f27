"""Next-day CTR AUC by how often the model has seen the item id, in daily incremental training.

The churn world of `benchmarks/dynamic_lookup_quality.py`: `--items` item ids in all, 40%
of them live on day 0, 5% released and 5% retired every later day, `--rows` impressions a
day. ESMM (towers 64-32, dim 8, hash item table of `capacity + 16` buckets, the churn
study's `hash` system) is trained one day at a time through `Experiment.train`, each day
on its checkpoint of the day before. After each training day its export scores the next
day (`predict_file`); every scored row goes into a bucket by how many training rows so far
had its item id (0: an id the model never saw), and the CTR AUC of each bucket is taken
over the rows of all scored days together. Mean ± std over `--seeds` seeds (data, model
and shuffling follow the seed).

Each `--embedding` value is one system: the embedding optimizer of the config
(`lazy_adam`, `lazy_adam:per_lookup`, `adam`), learning rate `--embedding-lr`; the dense
weights get the config's default (Adam 0.001). To compare two versions of mtlrec, run
this script on each with the same arguments.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/rare_id_auc.py
"""

import argparse
import collections
import datetime
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _paper_common as common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from dynamic_lookup_quality import START, schema  # noqa: E402

from mtlrec.data_pipeline import generate_funnel  # noqa: E402
from mtlrec.metrics import auc  # noqa: E402
from mtlrec.training.config import config_from_dict  # noqa: E402
from mtlrec.training.experiment import Experiment  # noqa: E402
from mtlrec.training.serving.predict import predict_file  # noqa: E402

#: upper bounds of the buckets of training rows with the item id
BUCKETS = (0, 9, 99, 999)


def bucket_names():
    names, low = [], 0
    for high in BUCKETS:
        names.append(str(high) if high == low else f"{low}-{high}")
        low = high + 1
    return names + [f"{low}+"]


def optimizer_section(embedding, lr):
    name, _, mode = embedding.partition(":")
    section = {"name": name, "learning_rate": lr}
    if mode:
        section["row_momentum"] = mode
    return {"embedding": section}


def day_columns(root, day, columns):
    return pq.read_table(Path(root) / f"dt={day}", columns=columns).to_pandas()


def run(root, run_dir, days, knobs, capacity, seed, embedding, args):
    """Per-bucket (labels, predictions) of the scored days of one system and seed."""
    config = config_from_dict({
        "name": "rare_id_auc",
        "run_dir": str(run_dir),
        "data": {"root": str(root), "format": "parquet"},
        "schema": schema(knobs, {"num_buckets": capacity + 16}),
        "tasks": [{"name": "ctr", "label": "click"},
                  {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}],
        "model": {"type": "esmm", "tower_units": [64, 32], "seed": seed},
        "optimizer": optimizer_section(embedding, args.embedding_lr),
        "training": {"batch_size": args.batch_size, "epochs_per_day": 1, "seed": seed,
                     "shuffle_buffer": 8192, "log_every": 10**6, "checkpoint_every": 10**6},
        "export": {"keep": 1},
    })
    seen = collections.Counter()
    labels, preds = collections.defaultdict(list), collections.defaultdict(list)
    for day, next_day in zip(days, days[1:]):
        keras.backend.clear_session()
        experiment = Experiment(config)
        experiment.train(day=day)
        trained = day_columns(root, day, ["item_id"])
        seen.update(trained["item_id"].tolist())
        export = experiment.current_export() or experiment.export()
        scored = run_dir / f"scored-{next_day}.parquet"
        predict_file(export, Path(root) / f"dt={next_day}", scored)
        truth = day_columns(root, next_day, ["impression_id", "item_id", "click"])
        pred = pq.read_table(scored, columns=["impression_id", "ctr"]).to_pandas()
        rows = truth.merge(pred, on="impression_id", validate="one_to_one")
        counts = np.array([seen[i] for i in rows["item_id"].tolist()])
        bucket = np.searchsorted(np.array(BUCKETS), counts)  # 0 -> bucket 0, 1..9 -> 1, ...
        for b in range(len(BUCKETS) + 1):
            mask = bucket == b
            labels[b].append(rows["click"].to_numpy()[mask])
            preds[b].append(rows["ctr"].to_numpy()[mask])
    return {b: (np.concatenate(labels[b]), np.concatenate(preds[b])) for b in labels}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=40000, help="rows per day")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=6000, help="item ids over the whole run")
    parser.add_argument("--days", type=int, default=7, help="days (the last one is only scored)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--embedding", nargs="+", default=["lazy_adam", "adam"])
    parser.add_argument("--embedding-lr", type=float, default=0.001)
    args = parser.parse_args()
    logging.getLogger("mtlrec.training").setLevel(logging.ERROR)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="rare_id_auc_"))
    knobs = dict(num_users=args.users, dim=8, max_len=10, num_items=args.items, initial_items=0.4,
                 new_items_per_day=0.05, retired_items_per_day=0.05)
    capacity = args.items // 2
    results = {system: collections.defaultdict(list) for system in args.embedding}
    rows_per_bucket = collections.defaultdict(list)
    for seed in range(1, args.seeds + 1):
        root = tmp / f"data_{seed}"
        days = generate_funnel(root, START, args.days, args.rows, seed=seed, **knobs)
        assert days[0] == START and days[-1] == (
            datetime.date.fromisoformat(START) + datetime.timedelta(days=args.days - 1)).isoformat()
        for system in args.embedding:
            scored = run(root, tmp / f"run_{system.replace(':', '_')}_{seed}", days, knobs, capacity, seed, system, args)
            for b, (y, p) in scored.items():
                results[system][b].append(auc(y, p))
                if system == args.embedding[0]:
                    rows_per_bucket[b].append(len(y))
            print(f"seed {seed} {system}: " + " ".join(
                f"{name} {results[system][b][-1]:.4f}" for b, name in enumerate(bucket_names())), flush=True)
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    header = ["embedding optimizer", *(f"item seen {name} times" for name in bucket_names())]
    table = [[system, *(common.fmt_mean_std(results[system][b]) for b in range(len(BUCKETS) + 1))]
             for system in args.embedding]
    table.append(["scored rows per seed", *(f"{statistics.mean(rows_per_bucket[b]):,.0f}"
                                            for b in range(len(BUCKETS) + 1))])
    common.print_report(
        f"next-day CTR AUC by the item's training rows so far, days 2..{args.days} scored, {args.seeds} "
        f"seeds (mean ± std); ESMM, hash item table {capacity + 16} buckets, embedding lr "
        f"{args.embedding_lr:g}; {time.perf_counter() - started:.0f} s", header, table)


if __name__ == "__main__":
    main()
