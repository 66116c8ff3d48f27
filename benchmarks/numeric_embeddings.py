"""Heavy-tailed numerics as embeddings: `bucketize` and `piecewise_linear` against
`standardize` (and `log1p`) on a generated tabular two-task day.

The generator (`tabular_day`, data seed `--data-seed`; the same world, i.e. the same
category effects, on both days): per row two categorical features, `segment` (50
values, Zipf-like) and `region` (12 values), and six numerics drawn heavy-tailed:

    income   lognormal(mu=10, sigma=1)               task a: +1.0 inside [15k, 40k] (a band)
    visits   Pareto(alpha=1.1) x 1  (x >= 1)         task a: +1.2 when visits > 3 (a threshold)
    amount   lognormal(mu=0, sigma=2)                task b: +1.5 inside [1, 10], -0.5 above 100
    tenure   0 with p=0.3, else Pareto(alpha=2) x 30 task b: +0.8 at 0 (a mass point), +0.6 above 120
    dwell    lognormal(mu=3, sigma=1)                a and b: 0.8 sin(2 ln dwell) (non-monotone)
    noise    Pareto(alpha=1.5)                       none

    logit_a = -1.6 + income + visits + dwell + segment_a + region_a
    logit_b = -2.2 + amount + tenure + dwell + segment_b + 0.5 region_a

(segment_a, segment_b ~ N(0, 0.5²), region_a ~ N(0, 0.3²)), a ~ Bernoulli(sigmoid(logit_a)),
b likewise: two binary tasks, no funnel. Every numeric effect is non-monotone or a
step, and the tails reach 10^4-10^6 times the median: a standardized value of the bulk
sits within a few hundredths of -mean/std.

Trained through `Experiment.train` on day 1 (what `mtlrec train` runs: the first day's
statistics and boundaries are computed by the runner), scored on day 2; MMoE (4 experts
[64], towers [32]), the categorical ids `lookup: identity` (no hashing), embedding dim
8, batch 512, the default optimizers. Each `--modes` entry sets `normalize` of the six
numerics. Mean ± sd over `--seeds` seeds (initialisation and shuffling; the data are
the same); the oracle row scores the generator's own probabilities.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/numeric_embeddings.py
"""

import argparse
import tempfile
import time
from pathlib import Path

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mtlrec.metrics import auc
from mtlrec.training.config import config_from_dict
from mtlrec.training.experiment import Experiment

DAYS = ("2024-01-01", "2024-01-02")
NUMERIC = ("income", "visits", "amount", "tenure", "dwell", "noise")
TASKS = ("a", "b")
SEGMENTS, REGIONS = 50, 12


def _pareto(rng, alpha, scale, n):
    return scale * (1.0 + rng.pareto(alpha, n))


def world(seed):
    """The category effects, shared by every day."""
    rng = np.random.default_rng([seed, 0])
    return {
        "segment_a": rng.normal(0, 0.5, SEGMENTS),
        "segment_b": rng.normal(0, 0.5, SEGMENTS),
        "region_a": rng.normal(0, 0.3, REGIONS),
        "segment_p": (p := 1.0 / np.arange(1, SEGMENTS + 1) ** 0.8) / p.sum(),
    }


def tabular_day(n, seed, day, w):
    """One day's columns: the features, labels `a`, `b` and the true probabilities."""
    rng = np.random.default_rng([seed, day + 1])
    segment = rng.choice(SEGMENTS, n, p=w["segment_p"])
    region = rng.integers(0, REGIONS, n)
    x = {
        "income": rng.lognormal(10.0, 1.0, n),
        "visits": _pareto(rng, 1.1, 1.0, n),
        "amount": rng.lognormal(0.0, 2.0, n),
        "tenure": np.where(rng.random(n) < 0.3, 0.0, _pareto(rng, 2.0, 30.0, n)),
        "dwell": rng.lognormal(3.0, 1.0, n),
        "noise": _pareto(rng, 1.5, 1.0, n),
    }
    wave = 0.8 * np.sin(2.0 * np.log(x["dwell"]))
    logit_a = (
        -1.6 + 1.0 * ((x["income"] >= 15e3) & (x["income"] <= 40e3)) + 1.2 * (x["visits"] > 3.0)
        + wave + w["segment_a"][segment] + w["region_a"][region]
    )
    logit_b = (
        -2.2 + 1.5 * ((x["amount"] >= 1.0) & (x["amount"] <= 10.0)) - 0.5 * (x["amount"] > 100.0)
        + 0.8 * (x["tenure"] == 0.0) + 0.6 * (x["tenure"] > 120.0)
        + wave + w["segment_b"][segment] + 0.5 * w["region_a"][region]
    )
    p_a, p_b = 1 / (1 + np.exp(-logit_a)), 1 / (1 + np.exp(-logit_b))
    cols = {"segment": segment.astype(np.int64), "region": region.astype(np.int64)}
    cols.update({k: v.astype(np.float32) for k, v in x.items()})
    cols["a"] = (rng.random(n) < p_a).astype(np.int64)
    cols["b"] = (rng.random(n) < p_b).astype(np.int64)
    return cols, {"a": p_a, "b": p_b}


def write_days(root, args):
    w = world(args.data_seed)
    truth, tests = {}, {}
    for i, (day, rows) in enumerate(zip(DAYS, (args.rows, args.eval_rows))):
        cols, probs = tabular_day(rows, args.data_seed, i, w)
        out = Path(root) / f"dt={day}"
        out.mkdir(parents=True)
        pq.write_table(pa.table(cols), out / "part-00000.parquet")
        truth[day], tests[day] = probs, cols
    return tests[DAYS[1]], truth[DAYS[1]]


def schema(mode, args):
    numeric = [{"name": n, "normalize": mode} for n in NUMERIC]
    if mode in ("bucketize", "piecewise_linear") and args.num_buckets:
        for f in numeric:
            f["num_buckets"] = args.num_buckets
    return {
        "categorical": [
            {"name": "segment", "num_buckets": SEGMENTS, "dim": args.dim, "lookup": "identity"},
            {"name": "region", "num_buckets": REGIONS, "dim": args.dim, "lookup": "identity"},
        ],
        "numeric": numeric,
        "labels": [{"name": t, "kind": "binary"} for t in TASKS],
    }


def run(mode, seed, root, test, args, run_dir):
    model = {"type": "mmoe", "num_experts": 4, "expert_units": [64], "tower_units": [32], "seed": seed}
    if args.interaction:
        model["interaction"] = {"type": args.interaction}
    config = config_from_dict({
        "name": f"numeric_{mode}",
        "run_dir": str(run_dir),
        "data": {"root": str(root), "funnel": []},
        "schema": schema(mode, args),
        "tasks": [{"name": t, "label": t} for t in TASKS],
        "model": model,
        "training": {"batch_size": args.batch_size, "epochs_per_day": args.epochs, "seed": seed,
                     "log_every": 10**9, "checkpoint_every": 10**9},
    })
    experiment = Experiment(config)
    start = time.perf_counter()
    experiment.train(day=DAYS[0])
    seconds = time.perf_counter() - start
    features = {k: test[k] for k in ("segment", "region", *NUMERIC)}
    out = pc.predict(experiment.trainer.model, features)
    pc.release(experiment.trainer.model)
    return {t: auc(test[t], out[t]) for t in TASKS}, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="rows of the training day")
    ap.add_argument("--eval-rows", type=int, default=200_000, help="rows of the scored day")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--num-buckets", type=int, default=None, help="default: the schema's (32)")
    ap.add_argument("--interaction", choices=("fm", "dot", "dcn"), default=None)
    ap.add_argument("--data-seed", type=int, default=11)
    ap.add_argument("--modes", nargs="+", default=["standardize", "log1p", "bucketize", "piecewise_linear"])
    args = ap.parse_args()

    start = time.time()
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        test, truth = write_days(root, args)
        for mode in args.modes:
            for seed in range(args.seeds):
                scores, took = run(mode, seed, root, test, args, Path(tmp) / f"run-{mode}-{seed}")
                for t in TASKS:
                    results.setdefault((mode, t), []).append(scores[t])
                seconds.setdefault(mode, []).append(took)
                print(f"{mode} seed {seed}: " + ", ".join(f"{t} AUC {scores[t]:.4f}" for t in TASKS)
                      + f" ({took:.0f} s)", flush=True)
    oracle = {t: auc(test[t], truth[t]) for t in TASKS}
    rates = ", ".join(f"{t} {np.mean(test[t]):.3f}" for t in TASKS)
    header = ["normalize", "task a AUC", "task b AUC", "train s"]
    rows = [[m, *(pc.fmt_mean_std(results[(m, t)]) for t in TASKS), f"{np.mean(seconds[m]):.0f}"] for m in args.modes]
    rows.append(["oracle (true probabilities)", *(f"{oracle[t]:.4f}" for t in TASKS), ""])
    if "standardize" in args.modes:
        base = {t: np.mean(results[("standardize", t)]) for t in TASKS}
        for m in args.modes:
            if m != "standardize":
                rows.append([f"{m} − standardize", *(f"{np.mean(results[(m, t)]) - base[t]:+.4f}" for t in TASKS), ""])
    pc.print_report(
        f"{args.rows} training rows, {args.eval_rows} scored (label rates {rates}), {args.seeds} seeds; "
        f"{(time.time() - start) / 60:.1f} minutes", header, rows,
    )


if __name__ == "__main__":
    main()
