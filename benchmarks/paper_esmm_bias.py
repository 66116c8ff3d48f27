"""ESMM against the sample-selection bias of a clicked-only CVR model (Ma et al., SIGIR 2018).

Data: `mtlrec.data_pipeline.generate_funnel` (impression -> click -> conversion) with the
true pCTR and pCVR of every impression; day 1 to train, day 2 to evaluate. Models (the
same towers over the same shared embedding schema):

- BASE: `SingleTask` CVR model trained on clicked impressions only (its task has
  `sample_space: click`, and only clicked rows are fed);
- BASE + oversampling: the same with the converted clicks copied `--oversample` times;
- ESMM: `mtlrec.models.ESMM`, pCTCVR = pCTR x pCVR, both losses over all impressions.

BASE's pCTCVR is its pCVR times the pCTR of a separately trained `SingleTask` CTR model
(as in the paper). Metrics on the evaluation day:

- CVR AUC, entire space, vs true pCVR: `mtlrec.metrics.truth_auc` (expected AUC against
  conversions drawn from the true pCVR for every impression, as if all were clicked);
- CVR AUC, entire space, vs drawn conversions: one such draw, scored with plain AUC;
- CVR AUC on clicked impressions against the observed conversions (the paper's CVR AUC);
- CTCVR AUC over all impressions against the observed click-and-conversion.

Paper's finding: ESMM beats BASE on CVR and on CTCVR.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/paper_esmm_bias.py
"""

import argparse
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import numpy as np

from mtlrec.metrics import auc, truth_auc
from mtlrec.models import ESMM, SingleTask

FEATURES = ("user_id", "user_age", "user_gender", "item_id", "item_category", "item_brand",
            "item_shop", "scene", "position", "price")
MODELS = ("BASE", "BASE + oversampling", "ESMM")
METRICS = (
    ("cvr_truth", "CVR AUC, all impressions, vs true pCVR"),
    ("cvr_drawn", "CVR AUC, all impressions, vs drawn conversions"),
    ("cvr_clicked", "CVR AUC, clicked impressions (observed)"),
    ("ctcvr", "CTCVR AUC, all impressions"),
)


def run_repeat(repeat, relatedness, args):
    knobs = dict(relatedness=relatedness, dim=args.dim, max_len=1,
                 num_users=args.num_users, num_items=args.num_items)
    (train, test), schema = pc.funnel_data(2, args.rows, seed=repeat, keep=FEATURES, **knobs)
    tl = train[1]
    ef, el = test
    clicked = np.flatnonzero(tl["click"] == 1)
    towers = [args.tower_units, args.tower_units // 2]
    results, seeds = {}, 100 * repeat
    inter = None if args.interaction == "none" else {"type": args.interaction}

    def train_model(model, rows, seed):
        return pc.fit_predict(model, train, rows, ef, args, seed)

    everything = np.arange(len(tl["click"]))
    pc.seed_everything(seeds + 1)
    ctr = SingleTask(schema, [{"name": "ctr", "label": "click"}], tower_units=towers,
                     interaction=inter, seed=seeds + 1)
    pctr = train_model(ctr, everything, seeds + 1)[0]["ctr"]

    cvr_task = [{"name": "cvr", "label": "conversion", "sample_space": "click"}]
    positives = clicked[tl["conversion"][clicked] == 1]
    rows = {
        "BASE": clicked,
        "BASE + oversampling": np.concatenate([clicked] + [positives] * (args.oversample - 1)),
    }
    preds, seconds = {}, {}
    for i, name in enumerate(rows):
        pc.seed_everything(seeds + 2 + i)
        model = SingleTask(schema, cvr_task, tower_units=towers, interaction=inter, seed=seeds + 2)
        out, seconds[name] = train_model(model, rows[name], seeds + 2 + i)
        preds[name] = (out["cvr"], out["cvr"] * pctr)
    pc.seed_everything(seeds + 5)
    esmm = ESMM(schema, tower_units=towers, interaction=inter, seed=seeds + 5)
    out, seconds["ESMM"] = train_model(esmm, everything, seeds + 5)
    preds["ESMM"] = (out["cvr"], out["ctcvr"])

    true_cvr, conv, click = el["true_cvr"], el["conversion"], el["click"] == 1
    drawn = (np.random.default_rng([repeat, 9]).random(len(true_cvr)) < true_cvr).astype(float)
    for name, (pcvr, pctcvr) in preds.items():
        results[name] = {
            "cvr_truth": truth_auc(pcvr, true_cvr),
            "cvr_drawn": auc(drawn, pcvr),
            "cvr_clicked": auc(conv[click], pcvr[click]),
            "ctcvr": auc(conv, pctcvr),
            "seconds": seconds[name],
        }
    results["oracle (true probabilities)"] = {
        "cvr_truth": truth_auc(true_cvr, true_cvr),
        "cvr_drawn": auc(drawn, true_cvr),
        "cvr_clicked": auc(conv[click], true_cvr[click]),
        "ctcvr": auc(conv, el["true_ctr"] * true_cvr),
        "seconds": 0.0,
    }
    # how biased the clicked space is: true pCVR on clicked vs all impressions
    stats = {"clicks": int(len(clicked)), "conversions": int(tl["conversion"].sum()),
             "true_cvr_clicked": float(tl["true_cvr"][clicked].mean()),
             "true_cvr_all": float(tl["true_cvr"].mean())}
    return results, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="fresh data and initialisation each")
    ap.add_argument("--rows", type=int, default=200000, help="impressions per day (train, eval)")
    ap.add_argument("--relatedness", type=float, nargs="+", default=[0.5],
                    help="funnel knob: how much CTR and CVR share their user-item term")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--oversample", type=int, default=5, help="copies of each converted click")
    ap.add_argument("--tower-units", type=int, default=64, help="towers: [u, u/2]")
    ap.add_argument("--dim", type=int, default=8, help="embedding dim")
    ap.add_argument("--interaction", choices=["none", "fm"], default="none",
                    help="models' interaction block: fm adds the FM bi-interaction of the id embeddings")
    ap.add_argument("--num-users", type=int, default=10000, help="funnel world: users")
    ap.add_argument("--num-items", type=int, default=5000, help="funnel world: items")
    ap.add_argument("--tag", default="",
                    help="write a separate results section and plot for a variant run (e.g. an investigation)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    start = time.perf_counter()
    all_results, all_stats = {}, {}
    for r in args.relatedness:
        for repeat in range(args.repeats):
            res, stats = run_repeat(repeat, r, args)
            all_results.setdefault(r, []).append(res)
            all_stats.setdefault(r, []).append(stats)
            print(f"relatedness {r} repeat {repeat}: " + "; ".join(
                f"{m} " + " ".join(f"{res[m][k]:.4f}" for k, _ in METRICS) for m in res), flush=True)
    total = time.perf_counter() - start

    names = list(MODELS) + ["oracle (true probabilities)"]
    tables = []
    for r in args.relatedness:
        runs = all_results[r]
        rows = []
        for m in names:
            rows.append([m] + [pc.fmt_mean_std([run[m][k] for run in runs]) for k, _ in METRICS])
        wins = [sum(run["ESMM"][k] > run["BASE"][k] for run in runs) for k, _ in METRICS]
        rows.append(["ESMM > BASE (runs)"] + [f"{w}/{len(runs)}" for w in wins])
        table = pc.markdown_table(["model"] + [label for _, label in METRICS], rows)
        st = all_stats[r]
        note = (f"relatedness {r}: {np.mean([s['clicks'] for s in st]):,.0f} clicks and "
                f"{np.mean([s['conversions'] for s in st]):,.0f} conversions per training day; "
                f"mean true pCVR {np.mean([s['true_cvr_clicked'] for s in st]):.3f} on clicked "
                f"vs {np.mean([s['true_cvr_all'] for s in st]):.3f} on all impressions")
        print(note)
        print(table)
        tables.append((r, note, table))

    if args.no_write:
        return
    plt = pc.pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 4), squeeze=False)
    colors = {"BASE": "tab:red", "BASE + oversampling": "tab:orange", "ESMM": "tab:blue"}
    for ax, (key, label) in zip(axes[0], METRICS):
        for i, m in enumerate(MODELS):
            for j, r in enumerate(args.relatedness):
                vals = [run[m][key] for run in all_results[r]]
                x = j + (i - 1) * 0.25
                ax.bar(x, np.mean(vals), 0.24, yerr=pc.mean_std(vals)[1], capsize=3,
                       color=colors[m], label=m if j == 0 else None)
                ax.plot([x] * len(vals), vals, "k.", ms=4)
        lo = min(run[m][key] for r in args.relatedness for run in all_results[r] for m in MODELS)
        hi = max(run[m][key] for r in args.relatedness for run in all_results[r] for m in MODELS)
        ax.set_ylim(lo - 0.03, hi + 0.02)
        ax.set_xticks(range(len(args.relatedness)), [f"relatedness {r}" for r in args.relatedness])
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("AUC (bars: mean ± std; dots: runs)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(MODELS), fontsize=9)
    fig.subplots_adjust(top=0.8)
    plot = pc.save_figure(fig, pc.tagged("paper_esmm_bias", args.tag) + ".png")

    body = f"""
`benchmarks/paper_esmm_bias.py`: Ma et al., SIGIR 2018. Synthetic funnel
(`generate_funnel`, base CTR 0.08, base CVR 0.15), {args.rows:,} impressions on the training day and as many on the evaluation day
(the next day), {args.repeats} repeats with fresh data and initialisation. Features:
{", ".join(FEATURES)} (embedding dim {args.dim}); towers [{args.tower_units}, {args.tower_units // 2}];
Adam lr {args.learning_rate}, batch {args.batch_size}, {args.epochs} epochs over each model's own
training rows. BASE = `SingleTask` CVR on clicked rows only; oversampling copies each
converted click {args.oversample}x; ESMM = `mtlrec.models.ESMM`. Interaction block:
{args.interaction}; world: {args.num_users:,} users, {args.num_items:,} items. BASE's CTCVR uses a separate
`SingleTask` CTR model. "vs true pCVR" is `mtlrec.metrics.truth_auc` over all
impressions (the expected AUC against conversions drawn from the true pCVR as if every
impression were clicked); "vs drawn conversions" is one such draw.

Command:

```
{pc.command()}
```

Machine: {pc.machine()}; {total / 60:.1f} minutes.

""" + "\n\n".join(f"{note}.\n\n{table}" for _, note, table in tables) + f"""

![ESMM vs BASE]({pc.plot_link(plot)})
"""
    path = pc.write_section(pc.section_title("ESMM and sample-selection bias (Ma et al., SIGIR 2018)", args.tag), body)
    print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    main()
