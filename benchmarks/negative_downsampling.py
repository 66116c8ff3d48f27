"""Negative downsampling: next-day AUC and calibration of a model trained on a day whose
unclicked impressions were kept at 10%, against one trained on the whole day.

Per seed (data, model and shuffling follow it): `generate_funnel` writes two days; the
first is downsampled (every clicked row kept, each unclicked one with probability
`--keep`, seeded), the second is kept whole. ESMM trains through the real path
(`Experiment.train`, what `mtlrec train` runs) on the first day:

- full: every row, no downsampling declared, `--epochs` epochs;
- downsampled: the kept rows, config `tasks[0].negative_keep_rate: <keep>`, for about as
  many steps as the full run (downsampling saves reading the dropped rows, not steps: on
  one day of this size a model trained for a sixth of the steps is simply undertrained),
  and once more for `--epochs` epochs (`--no-one-pass` leaves it out).

Both are scored on the **whole** second day with their SavedModel export (the
`serving_default` signature, what TF Serving answers): CTR AUC, CTCVR AUC, CVR AUC on the
clicked rows, and calibration = mean prediction / mean label for CTR and CTCVR. For the
downsampled run the same figures come also without the correction: the model's own
outputs (`model.keras`), which are the probabilities of the kept rows. And mtlrec's own
evaluation (`metrics.csv`) of the downsampled run, made on the second day downsampled the
same way (its negatives counted 1 / keep times), shows what `mtlrec train` reports when
the logs of every day are downsampled.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/negative_downsampling.py
"""

import argparse
import copy
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
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlrec.data_pipeline import funnel_schema_dict, generate_funnel, make_dataset  # noqa: E402
from mtlrec.metrics import auc, calibration  # noqa: E402
from mtlrec.training.config import config_from_dict  # noqa: E402
from mtlrec.training.experiment import Experiment  # noqa: E402
from mtlrec.training.run.metrics_log import read_metrics  # noqa: E402
from mtlrec.training.serving.export import latest_export  # noqa: E402

START = "2024-05-01"
KEEP_FEATURES = ("user_id", "item_id", "item_category", "scene", "position")
TASKS = [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]


def downsample_day(src_root, dst_root, day, keep, seed, label="click"):
    """Copy ``day`` keeping every row with ``label`` 1 and each other one with probability
    ``keep`` (seeded); the kept rows' keep rate goes to a ``keep_rate`` column. Returns
    (rows before, rows kept)."""
    rng = np.random.default_rng(seed)
    (Path(dst_root) / f"dt={day}").mkdir(parents=True, exist_ok=True)
    before = kept_rows = 0
    for path in sorted((Path(src_root) / f"dt={day}").glob("*.parquet")):
        table = pq.read_table(path)
        positive = table.column(label).to_numpy() == 1
        kept = positive | (rng.random(table.num_rows) < keep)
        table = table.filter(pa.array(kept))
        table = table.append_column("keep_rate", pa.array(np.where(positive[kept], 1.0, keep)))
        pq.write_table(table, Path(dst_root) / f"dt={day}" / path.name)
        before, kept_rows = before + len(kept), kept_rows + int(kept.sum())
    return before, kept_rows


def schema(knobs):
    full = funnel_schema_dict(**knobs)
    return {
        "key": full["key"],
        "categorical": [copy.deepcopy(c) for c in full["categorical"] if c["name"] in KEEP_FEATURES],
        "numeric": [n for n in full["numeric"] if n["name"] == "price"],
        "sequence": [s for s in full["sequence"] if s["name"] == "hist_item_id"],
        "labels": [label for label in full["labels"] if label["name"] in ("click", "conversion")],
    }


def train(root, run_dir, knobs, day, seed, args, keep=None, epochs=1):
    tasks = copy.deepcopy(TASKS)
    if keep is not None:
        tasks[0]["negative_keep_rate"] = keep
    config = config_from_dict({
        "name": "downsampling",
        "run_dir": str(run_dir),
        "data": {"root": str(root), "format": "parquet"},
        "schema": schema(knobs),
        "tasks": tasks,
        "model": {"type": "esmm", "tower_units": [64, 32], "seed": seed},
        "training": {"batch_size": args.batch_size, "epochs_per_day": epochs, "seed": seed, "shuffle_buffer": 8192,
                     "log_every": 10**6, "checkpoint_every": 10**6},
        "export": {"keep": 1},
    })
    keras.backend.clear_session()
    Experiment(config).train(day=day)
    return config


def score(run_dir, full_root, day, schema_dict):
    """Figures on the whole ``day`` of the export (corrected) and of model.keras (as trained)."""
    serve = tf.saved_model.load(str(latest_export(Path(run_dir) / "export"))).signatures["serving_default"]
    model = keras.saving.load_model(Path(run_dir) / "checkpoints" / "model.keras", safe_mode=True)
    names = list(serve.structured_input_signature[1])
    served, raw, labels = {"ctr": [], "ctcvr": [], "cvr": []}, {"ctr": [], "ctcvr": [], "cvr": []}, []
    for features, batch_labels in make_dataset(full_root, [day], schema_dict, batch_size=8192):
        inputs = {k: features[k] for k in names}
        out = serve(**inputs)
        own = model(inputs, training=False)
        for k in served:
            served[k].append(out[k].numpy())
            raw[k].append(np.asarray(own[k]))
        labels.append({k: v.numpy() for k, v in batch_labels.items()})
    click = np.concatenate([b["click"] for b in labels])
    conversion = np.concatenate([b["conversion"] for b in labels])
    return figures({k: np.concatenate(v) for k, v in served.items()}, click, conversion), \
        figures({k: np.concatenate(v) for k, v in raw.items()}, click, conversion)


def figures(pred, click, conversion):
    clicked = click == 1
    return {
        "ctr_auc": auc(click, pred["ctr"]),
        "ctcvr_auc": auc(conversion, pred["ctcvr"]),
        "cvr_auc": auc(conversion[clicked], pred["cvr"][clicked]),
        "ctr_calibration": calibration(click, pred["ctr"]),
        "ctcvr_calibration": calibration(conversion, pred["ctcvr"]),
    }


def own_evaluation(run_dir):
    rows = read_metrics(run_dir)
    return {f"{r['task']}_{r['metric']}": r["value"] for r in rows}


COLUMNS = [("ctr_auc", "CTR AUC"), ("ctcvr_auc", "CTCVR AUC"), ("cvr_auc", "CVR AUC (clicked)"),
           ("ctr_calibration", "CTR calibration"), ("ctcvr_calibration", "CTCVR calibration")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200_000, help="impressions per generated day")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--keep", type=float, default=0.1, help="share of the unclicked rows kept")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the full day")
    parser.add_argument("--downsampled-epochs", type=int, default=None,
                        help="epochs of the downsampled day (default: about as many steps as the full run)")
    parser.add_argument("--one-pass", action=argparse.BooleanOptionalAction, default=True,
                        help="also train the downsampled day for the full run's epochs")
    parser.add_argument("--popularity-drift", type=float, default=None,
                        help="the generator's day-to-day item popularity drift (default: its own, 0.3)")
    parser.add_argument("--tag", default="", help="write a separate variant section")
    args = parser.parse_args()
    logging.getLogger("mtlrec.training").setLevel(logging.ERROR)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="downsampling_"))
    knobs = dict(num_users=args.users, num_items=args.items, dim=8, max_len=10)
    if args.popularity_drift is not None:
        knobs["popularity_drift"] = args.popularity_drift
    same_steps = f"downsampled to {args.keep:g}, as many steps, corrected"
    raw_name = f"downsampled to {args.keep:g}, as many steps, without the correction"
    one_pass = f"downsampled to {args.keep:g}, {args.epochs} epoch(s), corrected"
    results = {"full day": [], same_steps: [], raw_name: []}
    if args.one_pass:
        results[one_pass] = []
    own, sizes, epochs_used = [], [], []
    for seed in range(1, args.seeds + 1):
        full_root, ds_root = tmp / f"full_{seed}", tmp / f"ds_{seed}"
        days = generate_funnel(full_root, START, 2, args.rows, seed=seed, **knobs)
        sizes.append([downsample_day(full_root, ds_root, d, args.keep, seed * 100 + i) for i, d in enumerate(days)])
        schema_dict = schema(knobs)
        train(full_root, tmp / f"run_full_{seed}", knobs, days[0], seed, args, epochs=args.epochs)
        full, _ = score(tmp / f"run_full_{seed}", full_root, days[1], schema_dict)
        (before, kept), _ = sizes[-1]
        ds_epochs = args.downsampled_epochs or max(1, round(args.epochs * before / kept))
        epochs_used.append(ds_epochs)
        train(ds_root, tmp / f"run_ds_{seed}", knobs, days[0], seed, args, keep=args.keep, epochs=ds_epochs)
        corrected, raw = score(tmp / f"run_ds_{seed}", full_root, days[1], schema_dict)
        found = [full, corrected, raw]
        own.append(own_evaluation(tmp / f"run_ds_{seed}"))
        if args.one_pass:
            train(ds_root, tmp / f"run_ds1_{seed}", knobs, days[0], seed, args, keep=args.keep, epochs=args.epochs)
            found.append(score(tmp / f"run_ds1_{seed}", full_root, days[1], schema_dict)[0])
        for name, value in zip(results, found):
            results[name].append(value)
        print(f"seed {seed}: " + "; ".join(
            f"{name}: " + ", ".join(f"{k} {v[k]:.4f}" for k, _ in COLUMNS) for name, v in
            zip(results, found)), flush=True)
        shutil.rmtree(full_root, ignore_errors=True)
        shutil.rmtree(ds_root, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)

    header = ["trained on"] + [title for _, title in COLUMNS]
    rows = [[name] + [common.fmt_mean_std([r[k] for r in runs]) for k, _ in COLUMNS] for name, runs in results.items()]
    full_runs, corrected_runs = results["full day"], results[same_steps]
    verdict = []
    for key, title in COLUMNS[:3]:
        a, b = [r[key] for r in full_runs], [r[key] for r in corrected_runs]
        diffs = [y - x for x, y in zip(a, b)]
        mean, sd = common.mean_std(diffs)
        verdict.append(f"- {title}: downsampled {statistics.mean(b):.4f} vs full {statistics.mean(a):.4f}; "
                       f"the difference on each seed's data {' '.join(f'{d:+.4f}' for d in diffs)} "
                       f"(mean {mean:+.4f} ± {sd:.4f})")
    for key, title in COLUMNS[3:]:
        values = [r[key] for r in corrected_runs]
        worst = max(abs(v - 1) for v in values)
        reference = common.fmt_mean_std([r[key] for r in full_runs], 3)
        verdict.append(f"- {title} after the correction: {common.fmt_mean_std(values, 3)}, every seed within "
                       f"{worst:.3f} of 1: **{'met' if worst <= 0.05 else 'not met'}** (target: within 0.05; "
                       f"the full-day model: {reference})")
    own_rows = [[f"seed {i + 1}"] + [f"{o.get('ctr_' + m, float('nan')):.4f}" for m in ("auc", "calibration")]
                + [f"{o.get('ctcvr_' + m, float('nan')):.4f}" for m in ("auc", "calibration")] for i, o in enumerate(own)]
    (before, kept), (before2, kept2) = sizes[0]
    text = "\n\n".join([
        f"{args.rows:,} impressions a day (`generate_funnel`, {args.users:,} users, {args.items:,} items, dim 8"
        f"{'' if args.popularity_drift is None else f', popularity_drift {args.popularity_drift:g}'}), "
        f"two days per seed; the first day's unclicked rows kept with probability {args.keep:g} (seed 1: "
        f"{kept:,} of {before:,} rows kept). ESMM (towers 64-32), batch {args.batch_size}, the config's "
        f"default optimizers; the full day trained for {args.epochs} epoch(s), the downsampled one for "
        f"{'/'.join(map(str, sorted(set(epochs_used))))} (about as many steps)"
        f"{f' and, in the last row, for {args.epochs}' if args.one_pass else ''}; {args.seeds} seeds (data, model and shuffling; mean ± sd). Every "
        f"figure is on the whole next day, scored by each run's SavedModel export (`serving_default`); "
        f"\"without the correction\" is the same downsampled model's own output (`model.keras`).",
        common.markdown_table(header, rows),
        "Targets (next-day AUC within noise of the full day; calibration within 0.05 of 1 after the "
        "correction):\n\n" + "\n".join(verdict),
        f"What `mtlrec train` itself reported for the downsampled runs (`metrics.csv`), evaluating on the "
        f"next day downsampled the same way ({kept2:,} of {before2:,} rows for seed 1) with each kept "
        f"negative counted 1 / {args.keep:g} times:",
        common.markdown_table(["run", "CTR AUC", "CTR calibration", "CTCVR AUC", "CTCVR calibration"], own_rows),
        f"{common.machine()}; {time.perf_counter() - started:.0f} s.\n\n    {common.command()}",
    ]) + "\n"
    print(text)
    common.write_section(common.section_title("Negative downsampling on a generated day", args.tag), text,
                         results=common.QUALITY)


if __name__ == "__main__":
    main()
