"""ESCM²'s `propensity_clip` measured: IPS and DR at several clips on the synthetic funnel.

The counterfactual risk weighs each clicked impression by 1 / max(pCTR, clip). When most
impressions have pCTR below the clip, the weight is the constant 1 / clip for most clicks and
the risk is a clicked-only CVR loss. This script trains ESCM² IPS and DR
(`mtlrec.models.ESCM2`, its own `compute_loss` through `model.fit`) with each clip of
`--clips` (1e-6 never binds here: it stands for no clip) on day 1 of
`mtlrec.data_pipeline.generate_funnel` and evaluates on day 2 (the next day), for each
`--base-ctr` and `--repeats` seeds (fresh data and initialisation each; every clip of a
seed sees the same data and initial weights). ESMM (no counterfactual risk) is the
reference.

Reported on the evaluation day, mean ± std over the seeds: the share of impressions and of
clicked impressions whose pCTR is below the clip (`ESCM2.evaluation_counts`, what
`metrics.csv` reports per day), CVR AUC over all impressions against the true pCVR (what
the counterfactual risk is for, `mtlrec.metrics.truth_auc`), CVR AUC on the clicked
impressions against the conversions, and CTCVR AUC against the conversions; then, per
clip, in how many seeds it beats 0.05 (the old default) on each AUC.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/escm2_propensity_clip.py
"""

import argparse
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import numpy as np

from mtlrec.metrics import auc, truth_auc
from mtlrec.models import ESCM2, ESMM

FEATURES = ("user_id", "user_age", "user_gender", "item_id", "item_category", "item_brand",
            "item_shop", "scene", "position", "price")
METRICS = (
    ("clipped", "impressions clipped", 3),
    ("clipped_clicked", "clicked impressions clipped", 3),
    ("cvr_truth", "CVR AUC vs true pCVR, all impressions", 4),
    ("cvr_clicked", "CVR AUC, clicked", 4),
    ("ctcvr", "CTCVR AUC", 4),
)
AUCS = ("cvr_truth", "cvr_clicked", "ctcvr")
REFERENCE_CLIP = 0.05


def evaluate(model, out, labels):
    """The metrics of predictions `out` against the evaluation day's `labels`."""
    clicked = labels["click"] == 1
    result = {
        "cvr_truth": truth_auc(out["cvr"], labels["true_cvr"]),
        "cvr_clicked": auc(labels["conversion"][clicked], out["cvr"][clicked]),
        "ctcvr": auc(labels["conversion"], out["ctcvr"]),
        "clipped": float("nan"),
        "clipped_clicked": float("nan"),
    }
    if isinstance(model, ESCM2):
        counts = model.evaluation_counts(labels, out)
        for key, name in (("clipped", "propensity_clipped_share"), ("clipped_clicked", "propensity_clipped_share_clicked")):
            count, rows = counts[("cvr", name)]
            result[key] = count / rows
    return result


def run_seed(base_ctr, repeat, args):
    knobs = dict(dim=args.dim, max_len=1, num_users=args.users, num_items=args.items, base_ctr=base_ctr)
    (train, (eval_features, eval_labels)), schema = pc.funnel_data(2, args.rows, seed=repeat, keep=FEATURES, **knobs)
    towers = [args.tower_units, args.tower_units // 2]
    runs = [("ESMM", None)] + [(f"ESCM2-{v.upper()}", clip) for v in args.variants for clip in args.clips]
    results = {}
    ctr = float(np.mean(train[1]["click"]))
    for name, clip in runs:
        seed = 1000 * repeat + 7  # the same initial weights for every clip of this seed
        pc.seed_everything(seed)
        if clip is None:
            model = ESMM(schema, tower_units=towers, seed=seed)
        else:
            model = ESCM2(schema, variant=name.split("-")[1].lower(), counterfactual_weight=args.counterfactual_weight,
                          propensity_clip=clip, tower_units=towers, seed=seed)
        ds = pc.dataset(train[0], train[1], args.batch_size, seed=seed)
        _, seconds = pc.fit(model, ds, args.epochs, args.learning_rate)
        out = pc.predict(model, eval_features)
        results[(name, clip)] = evaluate(model, out, eval_labels)
        pc.release(model)
        r = results[(name, clip)]
        print(f"  base CTR {base_ctr} (train CTR {ctr:.3f}) seed {repeat} {name} clip {clip}: "
              + " ".join(f"{k} {r[k]:.4f}" for k, _, _ in METRICS) + f" ({seconds:.0f} s)", flush=True)
    return results


def table(base_ctr, seeds, args):
    keys = list(seeds[0])
    rows = []
    for key in keys:
        name, clip = key
        cells = []
        for metric, _, digits in METRICS:
            values = [s[key][metric] for s in seeds]
            cells.append("" if any(np.isnan(values)) else pc.fmt_mean_std(values, digits))
        rows.append([name, "" if clip is None else f"{clip:g}"] + cells)
    for variant in args.variants:
        name = f"ESCM2-{variant.upper()}"
        reference = (name, REFERENCE_CLIP)
        if reference not in keys:
            continue
        for clip in args.clips:
            if clip == REFERENCE_CLIP:
                continue
            wins = [f"{sum(s[(name, clip)][m] > s[reference][m] for s in seeds)}/{len(seeds)}" for m in AUCS]
            rows.append([f"{name} {clip:g} > {REFERENCE_CLIP:g} (seeds)", "", "", ""] + wins)
    header = ["model", "clip"] + [label for _, label, _ in METRICS]
    return f"base CTR {base_ctr}:\n\n" + pc.markdown_table(header, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=float, nargs="+", default=[0.05, 0.01, 0.001, 1e-6])
    ap.add_argument("--variants", nargs="+", choices=["ips", "dr"], default=["ips", "dr"])
    ap.add_argument("--base-ctr", type=float, nargs="+", default=[0.08, 0.02],
                    help="the generator's mean pCTR (0.08 is its default)")
    ap.add_argument("--repeats", type=int, default=3, help="seeds: fresh data and initialisation each")
    ap.add_argument("--rows", type=int, default=30000, help="impressions per day (train, eval)")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--learning-rate", type=float, default=5e-3)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--tower-units", type=int, default=64, help="towers: [u, u/2]")
    ap.add_argument("--dim", type=int, default=8, help="embedding dim")
    ap.add_argument("--counterfactual-weight", type=float, default=0.5)
    args = ap.parse_args()
    if any(not 0 < c <= 1 for c in args.clips):
        ap.error("--clips: each in (0, 1]")

    start = time.perf_counter()
    tables = []
    for base_ctr in args.base_ctr:
        seeds = [run_seed(base_ctr, repeat, args) for repeat in range(args.repeats)]
        tables.append(table(base_ctr, seeds, args))
        print(tables[-1], flush=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{pc.command()}\n{pc.machine()}; {minutes:.1f} minutes\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
