"""The seesaw phenomenon on weakly related tasks (Tang et al., RecSys 2020).

Data: `mtlrec.data_pipeline.generate_funnel` with a low `relatedness` (the CTR and CVR
user-item terms mostly independent; CVR also depends on price vs purchasing power);
day 1 to train, day 2 to evaluate. Tasks: CTR over all impressions and CVR over the
clicked ones (`sample_space: click`, PLE section 4.3). Models, all over the same
embedding schema and with towers of `--tower-units`:

- Single-Task: one `SingleTask` model per task (nothing shared), tower [expert, tower];
- Shared-Bottom: `SharedBottom`, bottom [expert];
- MMoE: `MMoE`, `--mmoe-experts` experts of [expert] units;
- PLE: `PLE`, `--ple-levels` CGC levels with 1 expert per task and 1 shared, [expert] units.

Each task's gain is its AUC minus Single-Task's on the same data (CTR: all impressions;
CVR: the clicked impressions of the evaluation day), paired by repeat. Paper's finding:
Shared-Bottom and MMoE gain on one task and lose on the other; PLE gains on both.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/paper_ple_seesaw.py
"""

import argparse
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import numpy as np

from mtlrec.metrics import auc, truth_auc
from mtlrec.models import MMoE, PLE, SharedBottom, SingleTask

FEATURES = ("user_id", "user_age", "user_gender", "item_id", "item_category", "item_brand",
            "item_shop", "scene", "position", "price")
TASKS = [
    {"name": "ctr", "label": "click"},
    # the paper's per-space mean (section 4.3), not mtlrec's batch-level default
    {"name": "cvr", "label": "conversion", "sample_space": "click", "loss_normalization": "sample_space"},
]
MODELS = ("Single-Task", "Shared-Bottom", "MMoE", "PLE")
MULTI = MODELS[1:]


def build(name, schema, args, seed):
    e, t = [args.expert_units], [args.tower_units]
    inter = None if args.interaction == "none" else {"type": args.interaction}
    if name == "Shared-Bottom":
        return SharedBottom(schema, TASKS, bottom_units=e, tower_units=t, interaction=inter,
                            seed=seed)
    if name == "MMoE":
        return MMoE(schema, TASKS, num_experts=args.mmoe_experts, expert_units=e, tower_units=t,
                    interaction=inter, seed=seed)
    return PLE(schema, TASKS, num_levels=args.ple_levels, num_task_experts=1, num_shared_experts=1,
               expert_units=e, tower_units=t, interaction=inter, seed=seed)


def run_repeat(repeat, args):
    knobs = dict(relatedness=args.relatedness, dim=args.dim, max_len=1,
                 num_users=args.num_users, num_items=args.num_items)
    (train, test), schema = pc.funnel_data(2, args.rows, seed=repeat, keep=FEATURES, **knobs)
    ef, el = test
    rows = np.arange(len(train[1]["click"]))
    base = 100 * repeat
    preds, params, seconds = {}, {}, {}
    single, single_params, single_seconds = {}, 0, 0.0
    for i, task in enumerate(TASKS):  # Single-Task: a separate model per task
        pc.seed_everything(base + i)
        model = SingleTask(schema, [task], tower_units=[args.expert_units, args.tower_units],
                           interaction=None if args.interaction == "none" else {"type": args.interaction},
                           seed=base + i)
        single_params += pc.count_params(model, embeddings=False)
        out, sec = pc.fit_predict(model, train, rows, ef, args, seed=base + i)
        single[task["name"]] = out[task["name"]]
        single_seconds += sec
    preds["Single-Task"], params["Single-Task"], seconds["Single-Task"] = (
        single, single_params, single_seconds)
    for j, name in enumerate(MULTI):
        pc.seed_everything(base + 10 + j)
        model = build(name, schema, args, seed=base + 10 + j)
        params[name] = pc.count_params(model, embeddings=False)
        preds[name], seconds[name] = pc.fit_predict(model, train, rows, ef, args, seed=base + 10 + j)

    click = el["click"] == 1
    scores = {}
    for name, p in preds.items():
        scores[name] = {
            "ctr": auc(el["click"], p["ctr"]),
            "cvr": auc(el["conversion"][click], p["cvr"][click]),
            "cvr_truth": truth_auc(p["cvr"], el["true_cvr"]),
            "seconds": seconds[name],
        }
    scores["oracle (true probabilities)"] = {
        "ctr": auc(el["click"], el["true_ctr"]),
        "cvr": auc(el["conversion"][click], el["true_cvr"][click]),
        "cvr_truth": truth_auc(el["true_cvr"], el["true_cvr"]),
        "seconds": 0.0,
    }
    params["oracle (true probabilities)"] = 0
    label_corr = float(np.corrcoef(train[1]["true_ctr"], train[1]["true_cvr"])[0, 1])
    return scores, params, label_corr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="fresh data and initialisation each")
    ap.add_argument("--rows", type=int, default=200000, help="impressions per day (train, eval)")
    ap.add_argument("--relatedness", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--expert-units", type=int, default=64)
    ap.add_argument("--tower-units", type=int, default=32)
    ap.add_argument("--mmoe-experts", type=int, default=3)
    ap.add_argument("--ple-levels", type=int, default=2)
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
    runs, params, corrs = [], None, []
    for repeat in range(args.repeats):
        scores, params, corr = run_repeat(repeat, args)
        runs.append(scores)
        corrs.append(corr)
        print(f"repeat {repeat}: " + "; ".join(
            f"{m} ctr {s['ctr']:.4f} cvr {s['cvr']:.4f} ({s['seconds']:.0f}s)" for m, s in scores.items()),
            flush=True)
    total = time.perf_counter() - start

    def gains(m, key):
        return [r[m][key] - r["Single-Task"][key] for r in runs]

    rows = []
    for m in MODELS + ("oracle (true probabilities)",):
        oracle = m.startswith("oracle")
        row = [m, "—" if oracle else f"{params[m]:,}"]
        for key in ("ctr", "cvr"):
            row.append(pc.fmt_mean_std([r[m][key] for r in runs]))
            row.append("—" if m == "Single-Task" or oracle else pc.fmt_mean_std(gains(m, key)))
        row.append(pc.fmt_mean_std([r[m]["cvr_truth"] for r in runs]))
        if m == "Single-Task" or oracle:
            row.append("—")
        else:
            both = sum(a > 0 and b > 0 for a, b in zip(gains(m, "ctr"), gains(m, "cvr")))
            row.append(f"{both}/{len(runs)}")
        rows.append(row)
    header = ["model", "dense params", "CTR AUC", "CTR gain", "CVR AUC (clicked)", "CVR gain",
              "CVR AUC all imp. vs true pCVR", "gains on both (runs)"]
    table = pc.markdown_table(header, rows)
    print(table)
    if args.no_write:
        return

    plt = pc.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    colors = {"Shared-Bottom": "tab:red", "MMoE": "tab:green", "PLE": "tab:blue"}
    for m in MULTI:
        gx, gy = np.array(gains(m, "ctr")), np.array(gains(m, "cvr"))
        ax.scatter(gx, gy, color=colors[m], alpha=0.35, s=25)
        ax.errorbar(gx.mean(), gy.mean(), xerr=pc.mean_std(gx)[1], yerr=pc.mean_std(gy)[1],
                    fmt="o", ms=9, capsize=4, color=colors[m], label=f"{m} (mean ± std)")
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("CTR AUC gain over Single-Task")
    ax.set_ylabel("CVR AUC gain over Single-Task (clicked impressions)")
    ax.set_title(f"Seesaw check, relatedness {args.relatedness} ({args.repeats} runs; small dots: runs)",
                 fontsize=10)
    ax.text(0.98, 0.98, "gains on both", transform=ax.transAxes, ha="right", va="top", color="gray")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    plot = pc.save_figure(fig, pc.tagged("paper_ple_seesaw", args.tag) + ".png")

    body = f"""
`benchmarks/paper_ple_seesaw.py`: Tang et al., RecSys 2020. Synthetic funnel
(`generate_funnel`, relatedness {args.relatedness}: the CTR and CVR user-item terms share
{args.relatedness:.0%} of their latent vectors; correlation of true pCTR and true pCVR
{np.mean(corrs):.2f}), {args.rows:,} impressions to train on and as many the next day to
evaluate on, {args.repeats} repeats with fresh data and initialisation. Tasks: CTR on all
impressions, CVR on clicked ones (`sample_space: click`). Features: {", ".join(FEATURES)}
(embedding dim {args.dim}; world {args.num_users:,} users, {args.num_items:,} items; interaction
block: {args.interaction}); experts/bottom [{args.expert_units}], towers [{args.tower_units}];
MMoE {args.mmoe_experts} experts; PLE {args.ple_levels} levels of 1 task expert per task + 1 shared;
Single-Task = one `SingleTask` per task with tower [{args.expert_units}, {args.tower_units}]
(its params are the two models' sum; "dense params" leave out the embedding tables). Adam lr {args.learning_rate}, batch {args.batch_size},
{args.epochs} epochs, `model.fit` with the models' `compute_loss` (fixed weights 1, 1).
Gains are AUC differences to Single-Task on the same data, mean ± std over the repeats.

Command:

```
{pc.command()}
```

Machine: {pc.machine()}; {total / 60:.1f} minutes.

{table}

![seesaw]({pc.plot_link(plot)})
"""
    path = pc.write_section(pc.section_title("PLE and the seesaw phenomenon (Tang et al., RecSys 2020)", args.tag), body)
    print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    main()
