"""Model quality against DeepCTR on the same generated funnel: ESMM, MMoE, PLE.

Data: two days of `mtlrec.data_pipeline.generate_funnel` (train on the first, score the
second), the same categorical ids and `price` for both systems, no sequences. mtlrec
trains through its own runner (`Experiment.train`, i.e. `mtlrec train` with the config's
defaults: the optimizers, the embedding initialisation and the hashing a user gets);
DeepCTR 0.9.4 (optional: skipped with a message when not importable) gets the ids
index-encoded over both days (its tables are vocabularies: no collisions) and
log1p(price), as mtlrec's schema normalises it, and trains with `model.fit` and Adam.
Both: the same embedding dim, towers, experts, epochs, batch and learning rate; CVR of
MMoE / PLE trained on clicked rows (mtlrec: `sample_space: click`; DeepCTR: a 0/1
per-output sample weight), ESMM's CVR over all impressions through pCTCVR.

mtlrec runs at two hash sizes per id feature: `num_buckets` = the number of distinct
ids (what a DeepCTR user writes; about 63% of ids share a row) and 10x that (about 10%
share a row; `--bucket-factors`); `--dynamic` adds collision-free `lookup: dynamic`
tables of exactly the id count.

Per model and system, over `--seeds` seeds (model initialisation and shuffling; the data
are the same): CTR AUC; CVR AUC on the clicked rows; entire-space CVR AUC against the
true pCVR of every impression (`mtlrec.metrics.truth_auc`); CTCVR AUC; calibration
(mean prediction / mean label) of CTR and CTCVR; mean ± sd, and mtlrec - DeepCTR.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/quality_vs_peers.py
"""

import argparse
import json
import logging
import tempfile
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import keras
import numpy as np

from mtlrec.data_pipeline import funnel_schema_dict, generate_funnel
from mtlrec.metrics import auc, calibration, truth_auc
from mtlrec.training.config import config_from_dict
from mtlrec.training.experiment import Experiment
from train_throughput import deepctr_available, tasks_section

IDS = ("user_id", "user_age", "user_gender", "item_id", "item_category", "item_brand",
       "item_shop", "scene", "hour", "position")
NUMERIC = ("price",)
MODELS = ("esmm", "mmoe", "ple")
METRICS = (
    ("ctr_auc", "CTR AUC"),
    ("cvr_auc_clicked", "CVR AUC (clicks)"),
    ("cvr_auc_truth", "CVR AUC (all, vs true pCVR)"),
    ("ctcvr_auc", "CTCVR AUC"),
    ("ctr_calibration", "CTR calib."),
    ("ctcvr_calibration", "CTCVR calib."),
)


def make_days(root, args):
    knobs = dict(num_users=args.num_users, num_items=args.num_items, max_len=1, dim=args.dim)
    days = generate_funnel(root, "2024-01-01", 2, args.rows, seed=args.data_seed, **knobs)
    full = funnel_schema_dict(**knobs)
    schema = {
        "categorical": [f for f in full["categorical"] if f["name"] in IDS],
        "numeric": [f for f in full["numeric"] if f["name"] in NUMERIC],
        "labels": [lab for lab in full["labels"] if lab["name"] in ("click", "conversion")],
    }
    train = pc.funnel_day_arrays(root, days[0], schema)
    test = pc.funnel_day_arrays(root, days[1], schema)
    id_counts = {n: int(len(np.unique(np.concatenate([train[0][n], test[0][n]])))) for n in IDS}
    return days, schema, train, test, id_counts


def sized(schema, id_counts, factor):
    """`schema` with `num_buckets` = `factor` x each feature's id count; factor "dynamic":
    `lookup: dynamic` (collision-free) with num_buckets = the id count."""
    out = {k: [dict(f) for f in v] for k, v in schema.items()}
    for f in out["categorical"]:
        if factor == "dynamic":
            f.update(lookup="dynamic", num_buckets=id_counts[f["name"]])
        else:
            f["num_buckets"] = int(factor * id_counts[f["name"]])
    return out


def model_config(model, args):
    towers = list(args.tower_units)
    if model == "esmm":
        return {"type": "esmm", "tower_units": towers}
    experts = {"expert_units": list(args.expert_units), "tower_units": towers}
    if model == "mmoe":
        return {"type": "mmoe", "num_experts": args.experts, **experts}
    return {"type": "ple", "num_levels": 2, "num_task_experts": 1,
            "num_shared_experts": max(1, args.experts // 2), **experts}


def with_overrides(config, overrides):
    """`config` with each `key.path=json` of `overrides` set (for variant runs)."""
    for item in overrides:
        path, _, value = item.partition("=")
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = json.loads(value)
    return config


def run_mtlrec(model, root, days, schema, test, seed, args, run_dir, train_days=1):
    """Train `model` through `Experiment.train` on the first `train_days` of `days` and
    score `test`: `(p_ctr, p_cvr, training seconds)`."""
    config = config_from_dict(with_overrides({
        "name": f"quality_{model}",
        "run_dir": str(run_dir),
        "data": {"root": str(root)},
        "schema": schema,
        "tasks": tasks_section(model),
        "model": model_config(model, args),
        "training": {"batch_size": args.batch_size, "epochs_per_day": args.epochs, "seed": seed,
                     "log_every": 10**9, "checkpoint_every": 10**9},
    }, args.set))
    experiment = Experiment(config)
    start = time.perf_counter()
    if train_days == 1:
        experiment.train(day=days[0])
    else:
        experiment.train(days=f"{days[0]}:{days[train_days - 1]}")
    seconds = time.perf_counter() - start
    out = pc.predict(experiment.trainer.model, test[0])
    return out["ctr"], out["cvr"], seconds


def run_deepctr(model, train, test, id_counts, seed, args):
    from deepctr.feature_column import DenseFeat, SparseFeat, get_feature_names

    pc.seed_everything(seed)
    columns = [SparseFeat(n, vocabulary_size=id_counts[n] + 1, embedding_dim=args.dim) for n in IDS]
    columns += [DenseFeat(n, 1) for n in NUMERIC]
    net = deepctr_net(model, columns, seed, args)
    names = get_feature_names(columns)
    vocab = {n: np.unique(np.concatenate([train[0][n], test[0][n]])) for n in IDS}

    def inputs(features):
        x = {}
        for n in names:
            if n in vocab:  # DeepCTR has no hashing: index-encode (0 is never used)
                x[n] = (np.searchsorted(vocab[n], features[n]) + 1).reshape(-1, 1)
            else:
                x[n] = np.log1p(np.maximum(features[n], 0.0)).astype(np.float32).reshape(-1, 1)
        return x

    return deepctr_fit_predict(net, model, inputs(train[0]), train[1], inputs(test[0]), args)


def deepctr_net(model, columns, seed, args):
    """DeepCTR's `model` (esmm | mmoe | ple) over `columns`, compiled with Adam; the same
    towers, experts and embedding dim as mtlrec's `model_config`."""
    from deepctr.models import ESMM, MMOE, PLE

    common = dict(task_types=("binary", "binary"), task_names=("ctr", "cvr"), seed=seed)
    experts = dict(expert_dnn_hidden_units=tuple(args.expert_units),
                   tower_dnn_hidden_units=tuple(args.tower_units))
    if model == "esmm":
        net = ESMM(columns, tower_dnn_hidden_units=tuple(args.tower_units), **common)
    elif model == "mmoe":
        net = MMOE(columns, num_experts=args.experts, **experts, **common)
    else:
        net = PLE(columns, shared_expert_num=max(1, args.experts // 2), specific_expert_num=1,
                  num_levels=2, **experts, **common)
    net.compile(keras.optimizers.Adam(args.learning_rate), loss=["binary_crossentropy"] * 2)
    return net


def deepctr_fit_predict(net, model, x_train, labels, x_test, args):
    """Train a `deepctr_net` on `x_train` (ESMM: pCTR and pCTCVR over all impressions;
    MMoE / PLE: CVR on clicked rows, a 0/1 sample weight) and score `x_test`:
    `(p_ctr, p_cvr, training seconds)`; the network is released."""
    click, conversion = labels["click"], labels["conversion"]
    if model == "esmm":  # outputs (pCTR, pCTCVR)
        y, weights = [click, click * conversion], None
    else:  # CVR on clicked rows only
        y, weights = [click, conversion], [np.ones_like(click), click]
    start = time.perf_counter()
    net.fit(x_train, y, sample_weight=weights, batch_size=args.batch_size,
            epochs=args.epochs, shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    first, second = (np.asarray(p).reshape(-1) for p in net.predict(x_test, batch_size=8192, verbose=0))
    del net
    keras.backend.clear_session()
    if model == "esmm":
        return first, np.clip(second / np.maximum(first, 1e-7), 0.0, 1.0), seconds
    return first, second, seconds


def scores(p_ctr, p_cvr, test):
    labels = test[1]
    click, conversion, true_cvr = labels["click"], labels["conversion"], labels["true_cvr"]
    clicked = click == 1
    p_ctcvr = p_ctr * p_cvr
    return {
        "ctr_auc": auc(click, p_ctr),
        "cvr_auc_clicked": auc(conversion[clicked], p_cvr[clicked]),
        "cvr_auc_truth": truth_auc(p_cvr, true_cvr),
        "ctcvr_auc": auc(click * conversion, p_ctcvr),
        "ctr_calibration": calibration(click, p_ctr),
        "ctcvr_calibration": calibration(click * conversion, p_ctcvr),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=300_000, help="impressions per day (train day, eval day)")
    ap.add_argument("--num-users", type=int, default=20_000)
    ap.add_argument("--num-items", type=int, default=10_000)
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--systems", nargs="+", default=["mtlrec", "deepctr"], choices=["mtlrec", "deepctr"])
    ap.add_argument("--bucket-factors", type=int, nargs="+", default=[1, 10],
                    help="mtlrec's num_buckets of each id feature as multiples of its id count")
    ap.add_argument("--dynamic", action="store_true",
                    help="also run mtlrec with collision-free `lookup: dynamic` tables of the id count")
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--tower-units", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--expert-units", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--learning-rate", type=float, default=0.001,
                    help="DeepCTR's Adam (mtlrec uses its config defaults, also Adam 0.001)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=JSON",
                    help="override an mtlrec config key for a variant run, e.g. "
                         "optimizer.embedding='{\"name\": \"lazy_adagrad\", \"learning_rate\": 0.05}'")
    args = ap.parse_args()

    have_deepctr, info = deepctr_available()
    systems = list(args.systems)
    if "deepctr" in systems and not have_deepctr:
        print(f"deepctr not importable ({info}); its rows are skipped "
              "(pip install 'mtlrec[deepctr]' to compare)")
        systems.remove("deepctr")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mtlrec.training").setLevel(logging.WARNING)

    factors = args.bucket_factors + (["dynamic"] if args.dynamic else [])
    results = {}  # (model, system label) -> list of score dicts
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mtlrec_quality_") as tmp:
        root = f"{tmp}/data"
        days, schema, train, test, id_counts = make_days(root, args)
        rows_clicked = int(train[1]["click"].sum())
        print(f"train day {days[0]}: {args.rows:,} impressions, {rows_clicked:,} clicks, "
              f"{int((train[1]['click'] * train[1]['conversion']).sum()):,} conversions; "
              f"distinct ids: " + ", ".join(f"{n} {c:,}" for n, c in id_counts.items()), flush=True)
        for seed in range(args.seeds):
            for model in args.models:
                runs = []
                if "mtlrec" in systems:
                    runs += [(f"mtlrec, buckets {f}x ids" if f != "dynamic" else "mtlrec, dynamic ids", f)
                             for f in factors]
                if "deepctr" in systems:
                    runs.append(("DeepCTR", None))
                for label, factor in runs:
                    if factor is None:
                        p_ctr, p_cvr, secs = run_deepctr(model, train, test, id_counts, seed, args)
                    else:
                        run_dir = f"{tmp}/run_{model}_{factor}_{seed}"
                        p_ctr, p_cvr, secs = run_mtlrec(
                            model, root, days, sized(schema, id_counts, factor), test, seed, args, run_dir)
                        keras.backend.clear_session()
                    s = scores(p_ctr, p_cvr, test)
                    results.setdefault((model, label), []).append(s)
                    print(f"seed {seed} {model} {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in s.items())
                          + f" ({secs:.0f}s)", flush=True)
    minutes = (time.perf_counter() - start) / 60

    header = ["model", "system"] + [name for _, name in METRICS]
    rows = []
    for model in args.models:
        labels = [label for (m, label) in results if m == model]
        for label in labels:
            rows.append([model, label] + [pc.fmt_mean_std([r[k] for r in results[(model, label)]])
                                          for k, _ in METRICS])
        peer = results.get((model, "DeepCTR"))
        for label in labels:
            if peer is None or label == "DeepCTR":
                continue
            rows.append([model, f"{label} − DeepCTR"] + [
                f"{np.mean([r[k] for r in results[(model, label)]]) - np.mean([r[k] for r in peer]):+.4f}"
                for k, _ in METRICS])
    print()
    pc.print_report(f"{args.rows:,} impressions per day, {args.seeds} seeds, {minutes:.1f} minutes; "
                    f"deepctr {info if have_deepctr else 'not installed'}", header, rows)


if __name__ == "__main__":
    main()
