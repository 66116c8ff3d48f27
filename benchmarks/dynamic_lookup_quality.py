"""Next-day AUC with `lookup: dynamic` item tables vs `hash` (the two quality goals of dynamic tables).

Both studies train ESMM through the real path (`Experiment.train`, one day at a time,
each day evaluated on the following one) on synthetic funnel days, for `--seeds` seeds
(data, model and shuffling all follow the seed). Only the `item_id` table (read by
`item_id` and the `hist_item_id` history) differs between the two systems.

- collision-free: every item live from day 0; `dynamic` with `num_buckets` = the
  number of item ids (`--items`) against `hash` with 10x the buckets. Trained on day 0,
  evaluated on day 1.
- churn: `--days` days with new items arriving and the oldest retiring every day
  (`new_items_per_day`, `retired_items_per_day`), daily incremental training; `dynamic`
  with `ttl_days` against `hash` with the same table memory (capacity + OOV rows).
  The mean over the evaluated days of the next-day CTR and CVR AUC; the dynamic
  table's largest occupancy and any overflow are reported.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/dynamic_lookup_quality.py
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _paper_common as common  # noqa: E402
import keras  # noqa: E402

from mtlrec.data_pipeline import funnel_schema_dict, generate_funnel  # noqa: E402
from mtlrec.training.config import config_from_dict  # noqa: E402
from mtlrec.training.experiment import Experiment  # noqa: E402
from mtlrec.training.run.metrics_log import read_metrics  # noqa: E402
from mtlrec.training.run.run_state import RunState  # noqa: E402

START = "2024-03-01"
KEEP = ("user_id", "item_id", "item_category", "scene", "position")


def schema(knobs, item_table):
    full = funnel_schema_dict(**knobs)
    out = {
        "key": full["key"],
        "categorical": [copy.deepcopy(c) for c in full["categorical"] if c["name"] in KEEP],
        "numeric": [n for n in full["numeric"] if n["name"] == "price"],
        "sequence": [s for s in full["sequence"] if s["name"] == "hist_item_id"],
        "labels": [label for label in full["labels"] if label["name"] in ("click", "conversion")],
    }
    for c in out["categorical"]:
        if c["name"] == "item_id":
            c.update(item_table)
    return out


def optimizer_section(args):
    """The config's `optimizer` section: the defaults, or the learning rates given."""
    parts = {"dense": ("adam", args.dense_lr), "embedding": ("lazy_adam", args.embedding_lr)}
    section = {part: {"name": name, "learning_rate": lr} for part, (name, lr) in parts.items() if lr}
    return {"optimizer": section} if section else {}


def optimizer_text(args):
    dense = f"Adam {args.dense_lr:g}" if args.dense_lr else "the default Adam 0.001"
    embedding = (f"LazyAdam {args.embedding_lr:g}" if args.embedding_lr
                 else "the default LazyAdam 0.001 (row_momentum per_step)")
    return f"{dense} / {embedding}"


def run(root, run_dir, table, knobs, days, seed, args):
    config = config_from_dict({
        "name": "dynamic_quality",
        "run_dir": str(run_dir),
        "data": {"root": str(root), "format": "parquet"},
        "schema": schema(knobs, table),
        "tasks": [{"name": "ctr", "label": "click"},
                  {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}],
        "model": {"type": "esmm", "tower_units": [64, 32], "seed": seed},
        **optimizer_section(args),
        "training": {"batch_size": args.batch_size, "epochs_per_day": args.epochs, "seed": seed,
                     "shuffle_buffer": 8192, "log_every": 10**6, "checkpoint_every": 10**6},
        "export": {"keep": 1},
    })
    for day in days:
        keras.backend.clear_session()
        Experiment(config).train(day=day)
    rows = read_metrics(run_dir)
    auc = {t: [r["value"] for r in rows if r["task"] == t and r["metric"] == "auc"] for t in ("ctr", "cvr")}
    tables = [d.get("tables", {}).get("item_id") for d in RunState.load(run_dir).days]
    return auc, [t for t in tables if t]


def study(name, knobs, tables, train_days, args, tmp):
    results = {system: [] for system in tables}
    for seed in range(1, args.seeds + 1):
        root = tmp / f"{name}_data_{seed}"
        days = generate_funnel(root, START, train_days + 1, args.rows, seed=seed, **knobs)
        for system, table in tables.items():
            auc, occupancy = run(root, tmp / f"{name}_{system}_{seed}", table, knobs, days[:train_days], seed, args)
            results[system].append((auc, occupancy))
            print(f"{name} seed {seed} {system}: ctr auc {statistics.mean(auc['ctr']):.4f} "
                  f"cvr auc {statistics.mean(auc['cvr']):.4f}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    return results


def summary_rows(results):
    rows = []
    for system, runs in results.items():
        ctr = [statistics.mean(a["ctr"]) for a, _ in runs]
        cvr = [statistics.mean(a["cvr"]) for a, _ in runs]
        occ = [t for _, ts in runs for t in ts]
        peak = max((t["rows_in_use"] / t["capacity"] for t in occ), default=None)
        overflow = sum(t["overflow_lookups"] for t in occ)
        rows.append([system, common.fmt_mean_std(ctr), common.fmt_mean_std(cvr),
                     " ".join(f"{c:.4f}" for c in ctr), " ".join(f"{c:.4f}" for c in cvr),
                     "" if peak is None else f"{peak:.2f}", "" if peak is None else str(overflow)])
    return rows


def verdict(results, metrics):
    """One line per metric: the dynamic table's mean against hash's, seeds won, target met."""
    (dyn_name, dyn), (hash_name, hashed) = results.items()
    lines = []
    for metric, index in metrics:
        a = [statistics.mean(r[0][index]) for r in dyn]
        b = [statistics.mean(r[0][index]) for r in hashed]
        wins = sum(x > y for x, y in zip(a, b))
        diff = statistics.mean(a) - statistics.mean(b)
        met = "met" if diff >= 0 else "not met"
        lines.append(f"- {metric}: dynamic {statistics.mean(a):.4f} vs hash {statistics.mean(b):.4f} "
                     f"({diff:+.4f}; dynamic higher on {wins} of {len(a)} seeds): **{met}**")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=40000, help="rows per day")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=2000, help="item ids (collision-free study)")
    parser.add_argument("--days", type=int, default=7, help="days of the churn study (the last one only evaluates)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--studies", default="collision,churn")
    parser.add_argument("--min-count", type=int, default=1, help="min_count of the dynamic tables")
    parser.add_argument("--dense-lr", type=float, default=None,
                        help="Adam's learning rate on the dense weights (default: the config's)")
    parser.add_argument("--embedding-lr", type=float, default=None,
                        help="LazyAdam's learning rate on the tables (default: the config's)")
    parser.add_argument("--tag", default="", help="write a separate variant section")
    args = parser.parse_args()
    logging.getLogger("mtlrec.training").setLevel(logging.ERROR)
    started = time.perf_counter()
    tmp = __import__("pathlib").Path(tempfile.mkdtemp(prefix="dynamic_quality_"))
    header = ["item table", "next-day CTR AUC", "next-day CVR AUC", "CTR AUC by seed", "CVR AUC by seed",
              "peak occupancy", "overflow lookups"]
    body = []
    base = dict(num_users=args.users, dim=8, max_len=10)
    if "collision" in args.studies:
        knobs = dict(base, num_items=args.items, initial_items=1.0, new_items_per_day=0.0)
        tables = {
            f"dynamic, {args.items} rows": {"lookup": "dynamic", "num_buckets": args.items,
                                            "min_count": args.min_count},
            f"hash, {10 * args.items} buckets": {"num_buckets": 10 * args.items},
        }
        results = study("collision", knobs, tables, 1, args, tmp)
        body.append(f"### Collision-free: dynamic with num_buckets = the id count vs hash with 10x\n\n"
                    f"{args.items} item ids, all live; trained on one day of {args.rows:,} rows, "
                    f"evaluated on the next; {args.seeds} seeds (mean ± std).\n")
        body.append(common.markdown_table(header, summary_rows(results)))
        body.append("\nTarget (next-day CTR AUC of dynamic >= hash with 10x the buckets):\n\n"
                    + verdict(results, [("CTR AUC", "ctr")]))
    if "churn" in args.studies:
        items = 3 * args.items  # ids over the whole run; live at once: about 0.4 of them
        knobs = dict(base, num_items=items, initial_items=0.4, new_items_per_day=0.05,
                     retired_items_per_day=0.05)
        capacity, oov = int(0.5 * items), 16
        tables = {
            f"dynamic, {capacity} rows + {oov} OOV, ttl_days 1, min_count {args.min_count}": {
                "lookup": "dynamic", "num_buckets": capacity, "oov_buckets": oov, "ttl_days": 1,
                "min_count": args.min_count},
            f"hash, {capacity + oov} buckets": {"num_buckets": capacity + oov},
        }
        results = study("churn", knobs, tables, args.days - 1, args, tmp)
        churn_verdict = verdict(results, [("CTR AUC", "ctr"), ("CVR AUC", "cvr")])
        body.append(f"### Churn: {args.days} days, new and retiring items, the same table memory\n\n"
                    f"{items} item ids in all, {int(0.4 * items)} live on day 0, "
                    f"{int(0.05 * items)} released and {int(0.05 * items)} retired every later day; "
                    f"{args.rows:,} rows a day; daily incremental training on days 1..{args.days - 1}, "
                    f"each evaluated on the next day; the mean of those {args.days - 1} next-day AUCs, "
                    f"{args.seeds} seeds (mean ± std).\n")
        body.append(common.markdown_table(header, summary_rows(results)))
        body.append("\nTarget (better mean next-day CTR and CVR AUC than hash of the same memory; the "
                    "table never overflows; occupancy below capacity: see the last two columns):\n\n"
                    + churn_verdict)
    shutil.rmtree(tmp, ignore_errors=True)
    body.append(f"ESMM (towers 64-32, dim 8), {optimizer_text(args)}, batch {args.batch_size}, "
                f"{args.epochs} epoch a day. {common.machine()}; {time.perf_counter() - started:.0f} s.\n\n"
                f"    {common.command()}\n")
    text = "\n\n".join(part.strip() for part in body) + "\n"
    print(text)
    common.write_section(common.section_title("Dynamic embedding tables on a changing catalogue", args.tag), text,
                         results=common.QUALITY)


if __name__ == "__main__":
    main()
