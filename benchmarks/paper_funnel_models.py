"""AITM and ESCM² against ESMM on the synthetic funnel; AITM's calibrator; DSelect-k utilization.

Data: `mtlrec.data_pipeline.generate_funnel` (impression -> click -> conversion, with the
true pCTR and pCVR of every impression); day 1 to train, day 2 to evaluate. Models over
the same shared embedding schema, all trained on every impression:

- ESMM (`mtlrec.models.ESMM`): pCTCVR = pCTR x pCVR;
- ESCM² IPS and DR (`mtlrec.models.ESCM2`): ESMM plus the counterfactual CVR risk;
- AITM (`mtlrec.models.AITM`): ctr (click) -> ctcvr (conversion) with information
  transfer and the behavioural calibrator; its pCVR is pCTCVR / pCTR;
- MMoE (softmax gates, and DSelect-k gates with k = 2): flat tasks ctr and ctcvr, no
  funnel structure; pCVR = pCTCVR / pCTR.

Metrics on the evaluation day: CVR AUC over all impressions against the true pCVR
(`mtlrec.metrics.truth_auc`); CTCVR AUC against the observed click-and-conversion;
calibration (mean prediction / mean truth) of pCVR (against the true pCVR) and pCTCVR
(against the conversions); the share of rows with pCTCVR <= pCTR; for DSelect-k the mean
gate weight per expert and the experts per row with weight > 0.01.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/paper_funnel_models.py
"""

import argparse
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import numpy as np

from mtlrec.metrics import auc, calibration, truth_auc
from mtlrec.models import AITM, ESCM2, ESMM, MMoE

FEATURES = ("user_id", "user_age", "user_gender", "item_id", "item_category", "item_brand",
            "item_shop", "scene", "position", "price")
FLAT_TASKS = [{"name": "ctr", "label": "click"}, {"name": "ctcvr", "label": "conversion"}]
MODELS = ("ESMM", "ESCM2-IPS", "ESCM2-DR", "AITM", "MMoE", "MMoE + DSelect-k")
METRICS = (
    ("cvr_truth", "CVR AUC, all impressions, vs true pCVR"),
    ("ctcvr", "CTCVR AUC"),
    ("cvr_calibration", "pCVR calibration (vs true pCVR)"),
    ("ctcvr_calibration", "pCTCVR calibration"),
    ("ordered", "rows with pCTCVR <= pCTR"),
)
WORLDS = {
    "default": dict(num_users=10000, num_items=5000, learning_rate=1e-3, epochs=2),
    "dense": dict(num_users=300, num_items=200, learning_rate=5e-3, epochs=3),
}


def build(name, schema, args, seed):
    towers = [args.tower_units, args.tower_units // 2]
    if name == "ESMM":
        return ESMM(schema, tower_units=towers, seed=seed)
    if name.startswith("ESCM2"):
        variant = name.split("-")[1].lower()
        return ESCM2(schema, variant=variant, counterfactual_weight=args.counterfactual_weight,
                     tower_units=towers, seed=seed)
    if name == "AITM":
        return AITM(schema, tower_units=towers, lambda_=args.aitm_lambda, seed=seed)
    gate = {"type": "dselect_k", "k": 2} if "DSelect" in name else None
    return MMoE(schema, FLAT_TASKS, num_experts=args.experts, expert_units=[args.tower_units],
                tower_units=[args.tower_units // 2], gate=gate, seed=seed)


def run_repeat(world, repeat, args):
    w = WORLDS[world]
    knobs = dict(dim=args.dim, max_len=1, num_users=w["num_users"], num_items=w["num_items"])
    (train, test), schema = pc.funnel_data(2, args.rows, seed=repeat, keep=FEATURES, **knobs)
    ef, el = test
    run_args = argparse.Namespace(**{**vars(args), "learning_rate": w["learning_rate"], "epochs": w["epochs"]})
    everything = np.arange(len(train[1]["click"]))
    true_cvr, conv = el["true_cvr"], el["conversion"]
    results, utilization = {}, {}
    for i, name in enumerate(MODELS):
        seed = 100 * repeat + i
        pc.seed_everything(seed)
        model = build(name, schema, args, seed)
        ds = pc.dataset(pc.take(train[0], everything), pc.take(train[1], everything),
                        args.batch_size, seed=seed)
        _, seconds = pc.fit(model, ds, run_args.epochs, run_args.learning_rate)
        out = pc.predict(model, ef)
        if "DSelect" in name:
            gates = pc.predict(model.gate_model(), ef)
            utilization = {
                task: {"mean": np.asarray(g).mean(axis=0).tolist(),
                       "experts_per_row": float(np.mean((np.asarray(g) > 0.01).sum(axis=1)))}
                for task, g in gates.items()
            }
        pc.release(model)
        pctr, pctcvr = out["ctr"], out["ctcvr"]
        pcvr = out["cvr"] if "cvr" in out else np.clip(pctcvr / np.maximum(pctr, 1e-12), 0.0, 1.0)
        results[name] = {
            "cvr_truth": truth_auc(pcvr, true_cvr),
            "ctcvr": auc(conv, pctcvr),
            "cvr_calibration": float(np.mean(pcvr) / np.mean(true_cvr)),
            "ctcvr_calibration": calibration(conv, pctcvr),
            "ordered": float(np.mean(pctcvr <= pctr + 1e-7)),
            "seconds": seconds,
        }
        print(f"  {world} repeat {repeat} {name}: " + " ".join(
            f"{k} {results[name][k]:.4f}" for k, _ in METRICS) + f" ({seconds:.0f} s)", flush=True)
    results["oracle (true probabilities)"] = {
        "cvr_truth": truth_auc(true_cvr, true_cvr), "ctcvr": auc(conv, el["true_ctr"] * true_cvr),
        "cvr_calibration": 1.0, "ctcvr_calibration": calibration(conv, el["true_ctr"] * true_cvr),
        "ordered": 1.0, "seconds": 0.0,
    }
    return results, utilization


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", nargs="+", choices=sorted(WORLDS), default=["dense", "default"])
    ap.add_argument("--repeats", type=int, default=3, help="fresh data and initialisation each")
    ap.add_argument("--rows", type=int, default=100000, help="impressions per day (train, eval)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--tower-units", type=int, default=64, help="towers: [u, u/2]")
    ap.add_argument("--experts", type=int, default=4, help="MMoE experts of [u] units")
    ap.add_argument("--dim", type=int, default=8, help="embedding dim")
    ap.add_argument("--aitm-lambda", type=float, default=0.6)
    ap.add_argument("--counterfactual-weight", type=float, default=0.5)
    ap.add_argument("--tag", default="")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    start = time.perf_counter()
    sections = []
    names = list(MODELS) + ["oracle (true probabilities)"]
    for world in args.worlds:
        runs, utils = [], []
        for repeat in range(args.repeats):
            res, util = run_repeat(world, repeat, args)
            runs.append(res)
            utils.append(util)
        rows = [[m] + [pc.fmt_mean_std([r[m][k] for r in runs], 3) for k, _ in METRICS] for m in names]
        for other in ("ESCM2-IPS", "ESCM2-DR", "AITM"):
            rows.append([f"{other} > ESMM (runs)"] + [
                f"{sum(r[other][k] > r['ESMM'][k] for r in runs)}/{len(runs)}" if "calibration" not in k
                and k != "ordered" else "" for k, _ in METRICS])
        table = pc.markdown_table(["model"] + [label for _, label in METRICS], rows)
        util_rows = []
        for task in utils[0]:
            means = np.mean([u[task]["mean"] for u in utils], axis=0)
            per_row = [u[task]["experts_per_row"] for u in utils]
            util_rows.append([task, " ".join(f"{m:.3f}" for m in means), pc.fmt_mean_std(per_row, 2)])
        util_table = pc.markdown_table(
            ["task", f"mean gate weight per expert ({args.experts} experts)", "experts per row with weight > 0.01"],
            util_rows, align="llr")
        w = WORLDS[world]
        note = (f"{world} world ({w['num_users']:,} users, {w['num_items']:,} items; Adam lr "
                f"{w['learning_rate']}, {w['epochs']} epochs)")
        print(note)
        print(table)
        print(util_table)
        sections.append((note, table, util_table))
    total = time.perf_counter() - start
    if args.no_write:
        return

    body = f"""
`benchmarks/paper_funnel_models.py`: AITM (Xi et al., KDD 2021) and ESCM² (Wang et al.,
SIGIR 2022) against ESMM; DSelect-k gates (Hazimeh et al., NeurIPS 2021) in MMoE.
Synthetic funnel (`generate_funnel`, base CTR 0.08, base CVR 0.15, relatedness 0.5),
{args.rows:,} impressions on the training day and as many on the evaluation day (the next
day), {args.repeats} repeats with fresh data and initialisation per world. Features:
{", ".join(FEATURES)} (embedding dim {args.dim}); towers [{args.tower_units}, {args.tower_units // 2}]
(MMoE: {args.experts} experts of [{args.tower_units}], towers [{args.tower_units // 2}]); batch
{args.batch_size}; every model trains on all impressions with its own `compute_loss`
through `model.fit`. AITM lambda {args.aitm_lambda}; ESCM² counterfactual weight
{args.counterfactual_weight}, propensity clip 0.05. AITM's and MMoE's pCVR is pCTCVR / pCTR
(they have no CVR tower). "pCVR calibration" is mean pCVR / mean true pCVR over all
impressions; "pCTCVR calibration" is mean pCTCVR / conversion rate (1 is calibrated).

Command:

```
{pc.command()}
```

Machine: {pc.machine()}; {total / 60:.1f} minutes.

""" + "\n\n".join(f"{note}:\n\n{table}\n\nDSelect-k (k = 2) utilization after training:\n\n{util}"
                   for note, table, util in sections)
    path = pc.write_section(pc.section_title("AITM, ESCM² and DSelect-k on the funnel", args.tag), body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
